"""Small seeded models shaped like the benchmark workloads W1-W5 (docs/performance.md), for the engine tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KimCNN(nn.Module):
    """W1: embedding -> parallel conv1d (widths 3, 4, 5) + ReLU -> max over time -> concat -> linear."""

    def __init__(self, vocab=500, dim=24, channels=8, classes=5, bias=True, padding_idx=None):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim, padding_idx=padding_idx)
        self.convs = nn.ModuleList([nn.Conv1d(dim, channels, k, bias=bias) for k in (3, 4, 5)])
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(3 * channels, classes, bias=bias)

    def forward(self, ids):
        x = self.embedding(ids).transpose(1, 2)
        pooled = [F.relu(conv(x)).max(dim=2)[0] for conv in self.convs]
        return self.fc(self.dropout(torch.cat(pooled, dim=1)))


def bow_mlp(features=2000, bias=True):
    """W2: bag-of-words MLP."""
    return nn.Sequential(nn.Linear(features, 64, bias=bias), nn.ReLU(), nn.Linear(64, 32, bias=bias), nn.ReLU(),
                         nn.Linear(32, 5, bias=bias))


def vgg_like(bias=True):
    """W3: VGG-style blocks of 3x3 convolutions and max pooling, then dense layers."""
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=bias), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(3, 8), *block(8, 16), nn.Flatten(), nn.Linear(16 * 4 * 4, 32, bias=bias), nn.ReLU(),
                         nn.Dropout(), nn.Linear(32, 10, bias=bias))


def digits_cnn(bias=True):
    """W4: the digits CNN, exactly as in docs/performance.md."""
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1, bias=bias), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(1024, 128, bias=bias), nn.ReLU(), nn.Linear(128, 10, bias=bias))


class BagOfEmbeddings(nn.Module):
    """W5: EmbeddingBag (mean) -> linear, with offsets."""

    def __init__(self, vocab=500, dim=16, classes=5, bias=True):
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab, dim, mode="mean")
        self.fc = nn.Linear(dim, classes, bias=bias)

    def forward(self, ids, offsets):
        return self.fc(self.bag(ids, offsets))


class ResidualBlock(nn.Module):
    """A ResNet-style model: conv + BatchNorm + ReLU, a residual add, global average pooling."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        x = F.relu(x + h)
        return self.fc(torch.flatten(self.pool(x), 1))


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
