from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """Name only (zennit's layer types list it)."""
