"""Training a document classifier: seeded, with a progress bar and early stopping on the validation split."""

from __future__ import annotations

import copy
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from lrptext.datasets import TextDataset
from lrptext.models.text_models import ARCHS
from lrptext.text.classifier import TextClassifier
from lrptext.text.tokens import Tokenizer
from lrptext.text.vocab import Vocabulary

logger = logging.getLogger("lrptext")


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


class EarlyStopping:
    """Keeps the weights of the best validation accuracy; says stop after `patience` epochs without a better one."""

    def __init__(self, patience: int):
        self.patience, self.best, self.state, self.stale, self.history = patience, -1.0, None, 0, []

    def update(self, model: nn.Module, accuracy: float, epoch: int) -> bool:
        self.history.append(accuracy)
        logger.info("epoch %d: validation accuracy %.4f", epoch + 1, accuracy)
        if accuracy > self.best:
            self.best, self.state, self.stale = accuracy, copy.deepcopy(model.state_dict()), 0
        else:
            self.stale += 1
        return self.stale >= self.patience

    def restore(self, model: nn.Module) -> None:
        model.load_state_dict(self.state)
        model.eval()


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

    model = ARCHS[config.arch](len(vocab), len(dataset.label_names), **arch_options)
    if hasattr(model, "fit"):
        model.fit(rows["train"])
    if config.vectors:
        from lrptext.models.vectors import initialise

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


def train_images(dataset: Any, config: TrainConfig = TrainConfig(arch="vgg"), **arch_options: object) -> Any:
    """Trains an image classifier (config.arch: vgg or resnet) on an ImageDataset, normalising with the training
    set's per-channel mean and standard deviation; seeded, early stopping on a 10 % validation split."""
    import numpy as np
    from tqdm import tqdm

    from lrptext.image.classifier import ImageClassifier
    from lrptext.models.image_models import IMAGE_ARCHS

    if config.arch not in IMAGE_ARCHS:
        raise ValueError(f"unknown image architecture {config.arch!r}; choose one of {', '.join(IMAGE_ARCHS)}")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    images = torch.from_numpy(dataset.train_images)
    labels = torch.from_numpy(dataset.train_labels)
    order = torch.from_numpy(np.random.default_rng(config.seed).permutation(len(images)))
    cut = int(0.9 * len(images))
    train_idx, val_idx = order[:cut], order[cut:]
    mean = images[train_idx].mean(dim=(0, 2, 3)).tolist()
    std = images[train_idx].std(dim=(0, 2, 3)).tolist()
    model = IMAGE_ARCHS[config.arch](len(dataset.label_names), channels=images.shape[1], size=images.shape[2],
                                     **arch_options)
    classifier = ImageClassifier(model, dataset.label_names, mean=mean, std=std)
    x_all = classifier.normalise(images)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    show = sys.stderr.isatty() if config.progress is None else config.progress

    def accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
        model.eval()
        with torch.no_grad():
            hits = sum(int((model(x[s: s + 512]).argmax(1) == y[s: s + 512]).sum()) for s in range(0, len(x), 512))
        return hits / max(len(x), 1)

    stopping = EarlyStopping(config.patience)
    generator = torch.Generator().manual_seed(config.seed)
    for epoch in range(config.epochs):
        model.train()
        perm = train_idx[torch.randperm(len(train_idx), generator=generator)]
        batches = [perm[s: s + config.batch_size] for s in range(0, len(perm), config.batch_size)]
        for batch in tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not show, leave=False):
            optimizer.zero_grad()
            loss_fn(model(x_all[batch]), labels[batch]).backward()
            optimizer.step()
        if stopping.update(model, accuracy(x_all[val_idx], labels[val_idx]), epoch):
            break
    stopping.restore(model)
    test = accuracy(classifier.normalise(torch.from_numpy(dataset.test_images)), torch.from_numpy(dataset.test_labels))
    classifier.metadata = {"dataset": dataset.name, "test_accuracy": test, "validation_accuracy": stopping.best,
                           "validation_history": stopping.history, "train_seconds": round(time.perf_counter() - started, 1),
                           "config": {**asdict(config), "progress": None}, "arch_options": dict(arch_options),
                           "torch": str(torch.__version__)}
    return classifier
