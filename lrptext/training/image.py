"""Training an image classifier: seeded, normalised with the training set's statistics, early stopping on a
validation split."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from lrptext.image.classifier import ImageClassifier
from lrptext.models.image_models import IMAGE_ARCHS
from lrptext.training.config import TrainConfig
from lrptext.training.stopping import EarlyStopping


def train_images(dataset: Any, config: TrainConfig = TrainConfig(arch="vgg"),
                 **arch_options: object) -> ImageClassifier:
    """Trains an image classifier (config.arch: vgg or resnet) on an ImageDataset, normalising with the training
    set's per-channel mean and standard deviation; seeded, early stopping on a 10 % validation split."""
    from tqdm import tqdm

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
                           "validation_history": stopping.history,
                           "train_seconds": round(time.perf_counter() - started, 1),
                           "config": {**asdict(config), "progress": None}, "arch_options": dict(arch_options),
                           "torch": str(torch.__version__)}
    return classifier
