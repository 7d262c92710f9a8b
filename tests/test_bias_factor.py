"""The bias factor β of Arras et al. (2017) for dense and convolution layers under the epsilon rule: each output's
bias-and-stabiliser share β (b_j + s_j) R_j / st(z_j) goes evenly to the inputs it reads. With β = 1 relevance is
conserved through layers with biases; the oracle is the rule written out per output in float64 here."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrptext


def test_dense_layer_matches_the_rule_written_out(backend):
    torch.manual_seed(0)
    layer = nn.Linear(4, 3).double()
    x = torch.randn(2, 4, dtype=torch.float64)
    r = torch.randn(2, 3, dtype=torch.float64)
    e = lrptext.explain(layer, x, composite="epsilon", output_relevance=r.clone(), backend=backend, bias_factor=0.5)
    w, b = layer.weight.detach(), layer.bias.detach()
    for n in range(2):
        z = w @ x[n] + b
        s = torch.where(z >= 0, 1e-6, -1e-6)
        want = torch.zeros(4, dtype=torch.float64)
        for j in range(3):
            for i in range(4):
                want[i] += (w[j, i] * x[n, i] + 0.5 * (b[j] + s[j]) / 4) / (z[j] + s[j]) * r[n, j]
        torch.testing.assert_close(e.relevance[n], want, rtol=1e-10, atol=1e-12)


class TextCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 6)
        self.conv = nn.Conv1d(6, 5, 3, padding=1)
        self.fc = nn.Linear(5, 2)

    def forward(self, ids):
        return self.fc(self.conv(self.emb(ids).transpose(1, 2)).relu().max(2)[0])


class Image(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1, stride=2)
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).relu().flatten(1))


@pytest.mark.parametrize("model,make", [(TextCNN, lambda: torch.randint(0, 20, (3, 9))),
                                        (Image, lambda: torch.randn(3, 2, 8, 8, dtype=torch.float64))],
                         ids=["text-cnn", "conv2d"])
def test_bias_factor_one_conserves_relevance_through_biases(model, make, backend):
    torch.manual_seed(1)
    m = model().double()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 1:
                p.uniform_(-0.5, 0.5)  # biases worth absorbing
    x = make()
    conserved = lrptext.explain(m, x, composite="epsilon", backend=backend, bias_factor=1.0)
    absorbed = lrptext.explain(m, x, composite="epsilon", backend=backend)
    assert conserved.delta.abs().max() < 1e-9, conserved.delta
    assert absorbed.delta.abs().max() > 1e-2


def test_bias_factor_needs_the_epsilon_rule():
    with pytest.raises(ValueError, match="bias_factor=1.0 redistributes"):
        lrptext.explain(Image().double(), torch.randn(1, 2, 8, 8, dtype=torch.float64), composite="epsilon_plus",
                        bias_factor=1.0)
