"""A stand-in for torchvision, only so that zennit 1.0.0 imports beside the torch 2.13 CPU wheel (no torchvision
from the registries imports there; docs/development.md, Tests). It defines the names zennit reads at import time
and nothing else; a real torchvision, when importable, is always used instead."""

from torchvision import models, ops  # noqa: F401  (zennit reads torchvision.ops.FrozenBatchNorm2d)
