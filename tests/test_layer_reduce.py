"""Sums and means (lrptext/layers/reduce.py) under the Norm rule, against the rule written out here:
R_i = x_i (∂y/∂x_i) R / st(y), with ∂y/∂x_i = 1 for a sum and 1/n for a mean of n terms, st(y) = y + ε sign(y).

Each model's logits are one reduction of its input, so the input's relevance is that one step applied to the
initial relevance (the target logit), in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrptext
from lrptext.engine.propagate import RelevancePass
from lrptext.rules import Norm


class Reduction(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


# (the model's reduction of dimensions 2 and 3, whether it is a mean), each to logits [batch, 3]
CASES = {
    "method sum, two dims": (lambda x: x.sum((2, 3)), False),
    "function mean, negative dims": (lambda x: torch.mean(x, dim=[-1, -2]), True),
    "keepdim, then flattened": (lambda x: x.mean((3, 2), keepdim=True).flatten(1), True),
}


def norm_rule(x: torch.Tensor, mean: bool, target: torch.Tensor) -> torch.Tensor:
    """The rule element by element: each input's share of the target logit y_t."""
    eps = Norm().stabilizer
    out = torch.zeros_like(x)
    n = x.shape[2] * x.shape[3] if mean else 1
    for b in range(x.shape[0]):
        t = int(target[b])
        y = x[b, t].sum().item() / n
        for index in torch.cartesian_prod(*(torch.arange(s) for s in x.shape[2:])).tolist():
            xi = x[b, t, index[0], index[1]].item()
            out[b, t, index[0], index[1]] = xi * (1 / n) * y / (y + (eps if y >= 0 else -eps))
    return out


def general_norm_calls(monkeypatch) -> list:
    calls: list = []
    general = RelevancePass.norm
    monkeypatch.setattr(RelevancePass, "norm", lambda self, *a: calls.append(1) or general(self, *a))
    return calls


@pytest.mark.parametrize("case", list(CASES))
def test_sums_and_means_split_relevance_by_each_terms_share(case, monkeypatch):
    fn, mean = CASES[case]
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.3
    calls = general_norm_calls(monkeypatch)
    e = lrptext.explain(Reduction(fn), x)
    assert not calls  # the layer's own step, not the engine's general rule
    assert e.initial.tolist() == fn(x).gather(1, e.target[:, None])[:, 0].tolist()
    torch.testing.assert_close(e.relevance, norm_rule(x, mean, e.target), rtol=1e-12, atol=1e-15)
    # only the target's row of terms receives relevance, and it sums to the logit up to the stabiliser
    torch.testing.assert_close(e.relevance.sum((1, 2, 3)), e.initial, rtol=1e-5, atol=0)


def test_an_unnormalised_form_takes_the_engines_general_norm_rule(monkeypatch):
    """A sum with a dtype given is not one the layer reads its dimensions from: the engine's Norm, by autograd,
    takes it, with the same result."""
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.3
    fast = lrptext.explain(Reduction(lambda v: v.sum((2, 3))), x)
    calls = general_norm_calls(monkeypatch)
    general = lrptext.explain(Reduction(lambda v: v.sum((2, 3), dtype=torch.float64)), x)
    assert calls
    torch.testing.assert_close(general.relevance, fast.relevance, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(fast.relevance, norm_rule(x, False, fast.target), rtol=1e-12, atol=1e-15)
