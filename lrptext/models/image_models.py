"""Image classifiers lrptext trains and explains: the digits CNN of the benchmarks (W4), a VGG-style CNN and a
ResNet-style CNN with BatchNorm and residual additions, for 28x28 (Fashion-MNIST) or 8x8 (digits) images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class VGGStyle(nn.Module):
    arch = "vgg"

    def __init__(self, classes: int = 10, *, channels: int = 1, size: int = 28, width: int = 32):
        super().__init__()
        self.config = {"channels": channels, "size": size, "width": width}

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(),
                    nn.MaxPool2d(2)]

        self.features = nn.Sequential(*block(channels, width), *block(width, 2 * width))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * (size // 4) ** 2, 128), nn.ReLU(),
                                        nn.Dropout(0.3), nn.Linear(128, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class DigitsCNN(nn.Module):
    """The digits CNN (workload W4 of docs/performance.md): Conv(1, 32, 3, p1) + ReLU -> Conv(32, 64, 3, p1) + ReLU
    -> MaxPool 2 -> Linear(., 128) + ReLU -> Linear(128, 10); Linear(1024, 128) on 8x8 digits."""

    arch = "digits"

    def __init__(self, classes: int = 10, *, channels: int = 1, size: int = 8, width: int = 32):
        super().__init__()
        self.config = {"channels": channels, "size": size, "width": width}
        self.net = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                 nn.Linear(2 * width * (size // 2) ** 2, 128), nn.ReLU(), nn.Linear(128, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(h)))


class ResNetStyle(nn.Module):
    arch = "resnet"

    def __init__(self, classes: int = 10, *, channels: int = 1, size: int = 28, width: int = 32):
        super().__init__()
        self.config = {"channels": channels, "size": size, "width": width}
        self.stem = nn.Conv2d(channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.block1 = ResidualBlock(width)
        self.pool = nn.MaxPool2d(2)
        self.block2 = ResidualBlock(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        x = self.block2(self.pool(self.block1(x)))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


IMAGE_ARCHS: dict[str, type[nn.Module]] = {"digits": DigitsCNN, "vgg": VGGStyle, "resnet": ResNetStyle}
