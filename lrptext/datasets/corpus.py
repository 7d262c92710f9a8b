"""A labelled text corpus with its train / validation / test splits."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Split:
    texts: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class TextDataset:
    name: str
    label_names: list[str]
    train: Split
    validation: Split
    test: Split


def stratified_split(texts: list[str], labels: list[int], fractions: tuple[float, ...], seed: int) -> list[Split]:
    """Splits each label's documents by `fractions` (summing to 1) after a seeded shuffle."""
    rng = random.Random(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for label in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == label]
        rng.shuffle(idx)
        start = 0
        for k, fraction in enumerate(fractions):
            end = len(idx) if k == len(fractions) - 1 else start + round(fraction * len(idx))
            parts[k].extend(idx[start:end])
            start = end
    out = []
    for part in parts:
        part.sort()
        out.append(Split([texts[i] for i in part], [labels[i] for i in part]))
    return out
