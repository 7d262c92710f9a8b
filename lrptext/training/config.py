"""How a classifier is trained: architecture, optimisation, early stopping, seed and, for texts, the vocabulary."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "cnn"
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 3            # epochs without a better validation accuracy before stopping
    seed: int = 0
    max_tokens: int = 400
    vocab_size: int = 20_000
    min_count: int = 2
    progress: bool | None = None  # None: a progress bar when stderr is a terminal
    vectors: str | None = None    # initialise the embedding with pretrained vectors ("glove-6b-50d")
