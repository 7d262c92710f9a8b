"""The pad layer kind: padding's relevance is routed back to the values it copied. Oracle: a convolution over an
explicitly zero-padded input is the same layer as one with its own zero padding, whose relevance lrptext's conv
kernels compute (tested against the float64 reference elsewhere); reflected padding conserves relevance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrptext
from lrptext.rules import Composite, Epsilon


class Padded(nn.Module):
    def __init__(self, pad: nn.Module | None):
        super().__init__()
        self.pad = pad
        self.conv = nn.Conv2d(2, 3, 3, padding=0 if pad is not None else 1, bias=False)
        self.fc = nn.Linear(3 * 6 * 6, 4, bias=False)

    def forward(self, x):
        x = self.pad(x) if self.pad is not None else x
        return self.fc(self.conv(x).relu().flatten(1))


def _twins(pad: nn.Module) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    padded = Padded(pad).double()
    own = Padded(None).double()
    own.load_state_dict(padded.state_dict())
    return padded, own


@pytest.mark.parametrize("pad", [nn.ZeroPad2d(1), nn.ConstantPad2d(1, 0.0)], ids=["ZeroPad2d", "ConstantPad2d"])
def test_zero_padding_as_a_layer_equals_the_convolutions_own(pad):
    padded, own = _twins(pad)
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    composite = Composite("epsilon", dense=Epsilon(1e-9), conv=Epsilon(1e-9))
    ours = lrptext.explain(padded, x, composite=composite)
    reference = lrptext.explain(own, x, composite=composite)
    torch.testing.assert_close(ours.prediction, reference.prediction)
    torch.testing.assert_close(ours.relevance, reference.relevance)
    assert ours.relevance.shape == x.shape


def test_functional_padding_and_reflection_conserve_relevance():
    class Functional(nn.Module):
        def __init__(self, mode):
            super().__init__()
            self.mode, self.fc = mode, nn.Linear(2 * 8 * 8, 3, bias=False)

        def forward(self, x):
            return self.fc(F.pad(x, (1, 1, 1, 1), mode=self.mode).flatten(1))

    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    for mode in ("reflect", "replicate", "constant"):
        model = Functional(mode).double()
        e = lrptext.explain(model, x, composite=Composite("e", dense=Epsilon(1e-12)))
        assert e.relevance.shape == x.shape
        # zero fill keeps no relevance; copies of input values give theirs back to their sources
        torch.testing.assert_close(e.relevance.sum((1, 2, 3)), e.initial, rtol=1e-9, atol=1e-9)
    table = lrptext.support_table(Functional("reflect"), composite="epsilon")
    assert any(row.kind == "pad" and row.rule == "routed back (padding removed)" for row in table.rows)
