"""Ties at a max over time (a phrase repeated in a document makes identical convolution windows): LRP-0 on a
ReLU/max network is gradient × input, so its winner-take-all must send a tie where the operation's gradient does.
The reference is torch's autograd through the model itself: amax shares a tie equally among the tied maxima,
torch.max(x, dim) gives it to the index it returns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrptext


class TinyCNN(nn.Module):
    def __init__(self, pool: str):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(20, 6)
        self.conv = nn.Conv1d(6, 8, 3)
        self.fc = nn.Linear(8, 3)
        self.pool = pool

    def features(self, e: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(e.transpose(1, 2)))
        return h.amax(dim=2) if self.pool == "amax" else torch.max(h, dim=2).values

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(self.embedding(ids)))


def gradient_times_input(model: TinyCNN, ids: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    e = model.embedding(ids).detach().requires_grad_(True)
    logits = model.fc(model.features(e))
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), e)
    return (grad * e).sum(-1).detach()


@pytest.mark.parametrize("pool", ["amax", "max"])
def test_lrp0_is_gradient_times_input_with_repeated_phrases(pool):
    model = TinyCNN(pool).double().eval()
    phrase = [3, 7, 11]
    ids = torch.tensor([phrase + [5] + phrase + [9] + phrase, [1, 2] + phrase + [4] + phrase + [6, 8]])
    with torch.no_grad():
        h = torch.relu(model.conv(model.embedding(ids).transpose(1, 2)))
        tied = (h == h.amax(2, keepdim=True)).sum(2)
    assert (tied > 1).any(), "the test needs ties at the max"
    e = lrptext.explain(model, ids, composite="lrp0")
    expected = gradient_times_input(model, ids, e.target)
    torch.testing.assert_close(e.relevance, expected, rtol=1e-10, atol=1e-12)
