"""Training a document classifier: seeded, with a progress bar and early stopping on the validation split."""

from __future__ import annotations

import logging
import random
import sys
import time
from dataclasses import asdict

import torch
from torch import nn

from lrptext.datasets import TextDataset
from lrptext.models.text_models import ARCHS
from lrptext.text.classifier import TextClassifier
from lrptext.text.tokens import Tokenizer
from lrptext.text.vocab import Vocabulary
from lrptext.training.config import TrainConfig
from lrptext.training.stopping import EarlyStopping
from lrptext.training.vectors import VECTORS, initialise

logger = logging.getLogger("lrptext")


def _accuracy(model: nn.Module, rows: list[list[int]], labels: list[int], batch_size: int) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(rows), batch_size):
            logits = model(*model.inputs(rows[s: s + batch_size]))
            correct += int((logits.argmax(1) == torch.tensor(labels[s: s + batch_size])).sum())
    return correct / max(len(rows), 1)


def train(dataset: TextDataset, config: TrainConfig = TrainConfig(), **arch_options: object) -> TextClassifier:
    """Trains `config.arch` on `dataset`; the returned classifier's metadata holds the accuracies, the training
    time, the seed and the configuration that reproduce it."""
    if config.arch not in ARCHS:
        raise ValueError(f"unknown architecture {config.arch!r}; choose one of {', '.join(ARCHS)}")
    from tqdm import tqdm

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    tokenizer = Tokenizer()

    def tokenize(texts: list[str]) -> list[list[str]]:
        return [[t.norm for t in toks[: config.max_tokens]] for toks in tokenizer.pipe(texts)]

    train_tokens = tokenize(dataset.train.texts)
    vocab = Vocabulary.build(train_tokens, max_size=config.vocab_size, min_count=config.min_count)
    rows = {"train": [vocab.encode(t) for t in train_tokens]}
    for split in ("validation", "test"):
        rows[split] = [vocab.encode(t) or [vocab.unk_id] for t in tokenize(getattr(dataset, split).texts)]
    rows["train"] = [r or [vocab.unk_id] for r in rows["train"]]

    if config.vectors in VECTORS and "dim" not in arch_options:  # the embedding takes the vectors' width
        arch_options = {**arch_options, "dim": VECTORS[config.vectors]}  # (unknown names: initialise says so)
    model = ARCHS[config.arch](len(vocab), len(dataset.label_names), **arch_options)
    if hasattr(model, "fit"):
        model.fit(rows["train"])
    if config.vectors:
        embedding = getattr(model, "embedding", None) or getattr(model, "bag", None)
        if embedding is None:
            raise ValueError(f"architecture {config.arch!r} has no embedding to initialise with {config.vectors}")
        found = initialise(embedding, vocab, config.vectors)
        logger.info("%s: %d of %d vocabulary tokens initialised", config.vectors, found, len(vocab))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    labels = dataset.train.labels
    stopping = EarlyStopping(config.patience)
    show = sys.stderr.isatty() if config.progress is None else config.progress
    for epoch in range(config.epochs):
        model.train()
        order = list(range(len(rows["train"])))
        rng.shuffle(order)
        batches = [order[s: s + config.batch_size] for s in range(0, len(order), config.batch_size)]
        for batch in tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not show, leave=False):
            optimizer.zero_grad()
            logits = model(*model.inputs([rows["train"][i] for i in batch]))
            loss = loss_fn(logits, torch.tensor([labels[i] for i in batch]))
            loss.backward()
            optimizer.step()
        if stopping.update(model, _accuracy(model, rows["validation"], dataset.validation.labels, config.batch_size),
                           epoch):
            break
    stopping.restore(model)
    test_accuracy = _accuracy(model, rows["test"], dataset.test.labels, config.batch_size)
    metadata = {
        "dataset": dataset.name,
        "test_accuracy": test_accuracy,
        "validation_accuracy": stopping.best,
        "validation_history": stopping.history,
        "train_seconds": round(time.perf_counter() - started, 1),
        "config": {**asdict(config), "progress": None},
        "arch_options": dict(arch_options),
        "torch": str(torch.__version__),  # TorchVersion is not a plain str: weights_only loading refuses it
    }
    return TextClassifier(model, vocab, dataset.label_names, max_tokens=config.max_tokens, tokenizer=tokenizer,
                          metadata=metadata)
