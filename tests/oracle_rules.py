"""The LRP rules shared by the float64 oracles of the transformer tests (test_transformers.py for BERT and its
kin, test_modernbert_oracle.py), as torch.autograd.Functions whose backward *is* the rule: the "gradient" autograd
carries is the relevance. Written from the rules' equations, not from lrptext's code."""

from __future__ import annotations

import torch
from torch.autograd import Function

EPS = 1e-6  # the composites' default ε and the LayerNorm rule's stabiliser (additions split exactly)
RTOL = 1e-8


def st(z: torch.Tensor) -> torch.Tensor:
    return z + EPS * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def ratio(r: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """r / y without a stabiliser, 0 where r is 0 (the proportional split of an exact 0 sends nothing)."""
    return torch.where(r == 0, torch.zeros_like(r), r / torch.where(y == 0, torch.ones_like(y), y))


class Identity(Function):
    """An element-wise map whose relevance passes unchanged (GELU; × a constant mask; ÷ a constant count)."""

    @staticmethod
    def forward(ctx, x, fn):
        return fn(x)

    @staticmethod
    def backward(ctx, r):
        return r, None


class ProportionalAdd(Function):
    """a + b split in proportion to each term, without a stabiliser."""

    @staticmethod
    def forward(ctx, a, b):
        y = a + b
        ctx.save_for_backward(a, b, y)
        return y

    @staticmethod
    def backward(ctx, r):
        a, b, y = ctx.saved_tensors
        s = ratio(r, y)
        return a * s, b * s


class ProportionalSum(Function):
    """y = Σ_dim x, split in proportion to each term (as the additions)."""

    @staticmethod
    def forward(ctx, x, dim):
        y = x.sum(dim)
        ctx.save_for_backward(x, y)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx, r):
        x, y = ctx.saved_tensors
        return x * ratio(r, y).unsqueeze(ctx.dim), None


def assert_relevance(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=1e-9 * expected.abs().max().item())
