from torch import nn


class BasicBlock(nn.Module):
    """Name only (zennit's torchvision canonizers test isinstance against it)."""


class Bottleneck(nn.Module):
    """Name only (zennit's torchvision canonizers test isinstance against it)."""
