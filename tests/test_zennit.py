"""Equality with zennit 1.0.0 for the same composite, where zennit can run (it is optional: install it with
benchmarks/anchors/install_zennit.sh; without it these tests are skipped, visibly)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lrptext import explain
from models import KimCNN, vgg_like

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "anchors"))
from zennit_import import import_zennit  # noqa: E402

zennit = import_zennit() if importlib.util.find_spec("zennit") else None
pytestmark = pytest.mark.skipif(zennit is None,
                                reason="zennit 1.0.0 not installed (benchmarks/anchors/install_zennit.sh)")


def zennit_relevance(model, x, target, composite):
    from zennit.attribution import Gradient

    with Gradient(model=model, composite=composite) as attributor:
        onehot = torch.zeros(x.shape[0], 10 if target is None else target[1], dtype=x.dtype)
        onehot[:, target[0]] = 1.0
        _, relevance = attributor(x, lambda out: out * onehot)
    return relevance


def vgg(seed=0):
    torch.manual_seed(seed)
    return vgg_like().double().eval()


@pytest.mark.parametrize("name", ["epsilon_gamma_box", "epsilon_plus_flat"])
def test_the_packaged_vgg_style_model_matches_zennit(name):
    from zennit import composites as zc

    from lrptext.models.image_models import VGGStyle

    torch.manual_seed(3)
    model = VGGStyle(10, channels=3, size=16, width=8).double().eval()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    params = {"low": -1.5, "high": 2.5} if name == "epsilon_gamma_box" else {}
    theirs_composite = zc.EpsilonGammaBox(**params) if params else zc.EpsilonPlusFlat()
    ours = explain(model, x, target=4, composite=name, **params).relevance
    torch.testing.assert_close(ours, zennit_relevance(model, x, (4, 10), theirs_composite), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("name", ["epsilon_gamma_box", "epsilon_plus_flat", "epsilon_alpha2_beta1", "epsilon_plus"])
def test_vgg_like_matches_zennit(name):
    from zennit import composites as zc

    model = vgg()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    params = {"low": -1.0, "high": 2.0} if name == "epsilon_gamma_box" else {}
    zennit_composite = {"epsilon_gamma_box": zc.EpsilonGammaBox, "epsilon_plus_flat": zc.EpsilonPlusFlat,
                        "epsilon_alpha2_beta1": zc.EpsilonAlpha2Beta1, "epsilon_plus": zc.EpsilonPlus}[name](**params)
    ours = explain(model, x, target=3, composite=name, **params).relevance
    theirs = zennit_relevance(model, x, (3, 10), zennit_composite)
    torch.testing.assert_close(ours, theirs, rtol=1e-7, atol=1e-10)


class AfterEmbedding(nn.Module):
    """A Kim CNN from its embedding output on (zennit cannot take token ids)."""

    def __init__(self, kim: KimCNN):
        super().__init__()
        self.convs, self.fc = kim.convs, kim.fc

    def forward(self, x):
        pooled = [torch.relu(conv(x.transpose(1, 2))).max(dim=2)[0] for conv in self.convs]
        return self.fc(torch.cat(pooled, dim=1))


def test_kim_cnn_matches_zennit_at_the_embedding_output_and_fixes_its_first_layer_defect():
    from zennit import composites as zc

    torch.manual_seed(1)
    model = AfterEmbedding(KimCNN().double().eval())
    x = torch.randn(2, 30, 24, dtype=torch.float64)
    torch.testing.assert_close(explain(model, x, target=1, composite="epsilon_plus").relevance,
                               zennit_relevance(model, x, (1, 5), zc.EpsilonPlus()), rtol=1e-7, atol=1e-10)
    # zennit gives Flat to convs.0 only; lrptext to all three parallel first convolutions, so they differ
    ours = explain(model, x, target=1, composite="epsilon_plus_flat").relevance
    theirs = zennit_relevance(model, x, (1, 5), zc.EpsilonPlusFlat())
    assert (ours - theirs).abs().max() > 1e-3
