"""Gated units, a product of two relevance-carrying tensors (GLU: act(a) ⊙ b), under the transformer composites:
AttnLRP's uniform rule for multiplications (Achtibat et al. 2024) gives each operand half of the product's
relevance, without a stabiliser. The oracle is written here from the rules' equations in float64; then
ModernBERT (a fused q, k, v projection cut by unbind, rotary position embeddings, GLU feed-forward layers, local
attention), built tiny from a config, through the whole pipeline."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrptext
from lrptext.errors import UnsupportedLayerError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
EPSILON = 1e-6


class Gated(nn.Module):
    """x -> (gelu(W_a x) ⊙ W_b x) -> W_o, no biases."""

    def __init__(self, features=5, hidden=7, classes=3):
        super().__init__()
        self.a = nn.Linear(features, hidden, bias=False)
        self.b = nn.Linear(features, hidden, bias=False)
        self.out = nn.Linear(hidden, classes, bias=False)

    def forward(self, x):
        return self.out(F.gelu(self.a(x)) * self.b(x))


def _epsilon(x, weight, r):
    """The epsilon rule of a bias-free linear map z = W x: R(x) = x ⊙ Wᵀ (R / (z + ε sign z))."""
    z = x @ weight.T
    return x * ((r / (z + EPSILON * torch.where(z >= 0, 1.0, -1.0))) @ weight)


def oracle(model, x, target):
    a, b = x @ model.a.weight.T, x @ model.b.weight.T
    gate = F.gelu(a)
    logits = (gate * b) @ model.out.weight.T
    r = torch.zeros_like(logits).scatter(1, target[:, None], logits.gather(1, target[:, None]))
    r_product = _epsilon(gate * b, model.out.weight, r)
    r_gate = r_b = r_product / 2  # the uniform rule; GELU passes its share on (the identity rule)
    return _epsilon(x, model.a.weight, r_gate) + _epsilon(x, model.b.weight, r_b)


@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
def test_a_gated_unit_against_the_rules_equations(composite):
    torch.manual_seed(0)
    model = Gated().double()
    x = torch.randn(4, 5, dtype=torch.float64)
    target = torch.tensor([0, 2, 1, 1])
    e = lrptext.explain(model, x, target=target, composite=composite)
    torch.testing.assert_close(e.relevance, oracle(model, x, target), rtol=1e-10, atol=1e-13)


class SoftmaxGated(Gated):
    """x -> (softmax(W_a x) ⊙ W_b x) -> W_o: a gate computed by a softmax, which CP-LRP holds constant."""

    def forward(self, x):
        return self.out(torch.softmax(self.a(x), -1) * self.b(x))


def test_cp_lrp_holds_a_softmax_gate_constant():
    torch.manual_seed(1)
    model = SoftmaxGated().double()
    x = torch.randn(3, 5, dtype=torch.float64)
    gate = torch.softmax(x @ model.a.weight.T, -1)
    b = x @ model.b.weight.T
    logits = (gate * b) @ model.out.weight.T
    target = logits.argmax(-1)
    r = torch.zeros_like(logits).scatter(1, target[:, None], logits.gather(1, target[:, None]))
    want = _epsilon(x, model.b.weight, _epsilon(gate * b, model.out.weight, r))  # all of it through b
    e = lrptext.explain(model, x, composite="cp_lrp")
    torch.testing.assert_close(e.relevance, want, rtol=1e-10, atol=1e-13)


def test_other_composites_refuse_a_gated_unit():
    with pytest.raises(UnsupportedLayerError, match="multiplies or divides relevance-carrying tensors.*attnlrp"):
        lrptext.explain(Gated(), torch.randn(2, 5), composite="epsilon")


class ScaledGated(Gated):
    """The gate's product scaled by a constant after it: one multiplication is a gate, the other a scaling."""

    def forward(self, x):
        return self.out(F.gelu(self.a(x)) * self.b(x) * 0.5)


@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp", "epsilon"])
def test_the_support_table_tells_a_gate_from_a_constant_scaling(composite):
    """Both multiplications take the composite's rule for their kind, which applies to gates alone: the table says
    what each does, and REFUSED where explain() refuses."""
    model = ScaledGated()
    gate, scaling = (row.rule for row in lrptext.support_table(model, composite=composite).rows
                     if row.kind == "scale")
    assert scaling == "passes to the non-constant operand"
    if composite == "epsilon":
        assert gate.startswith("REFUSED")
        with pytest.raises(UnsupportedLayerError, match="multiplies or divides relevance-carrying tensors"):
            lrptext.explain(model, torch.randn(2, 5), composite=composite)
    else:
        assert gate == f"{'AttnLRP' if composite == 'attnlrp' else 'CPLRP'}(): half to each relevance-carrying operand"
        assert torch.isfinite(lrptext.explain(model, torch.randn(2, 5), composite=composite).relevance).all()
    softmax_gate = [row.rule for row in lrptext.support_table(SoftmaxGated(), composite="cp_lrp").rows
                    if row.kind == "scale"]
    assert softmax_gate == ["CPLRP(): all to the other operand (the first computed by a softmax held constant)"]


class Divisions(nn.Module):
    """x / 2 passes relevance; a / b and 2 / a divide by a relevance-carrying tensor, which has no rule."""

    def __init__(self, divisor: str):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(5, 7), nn.Linear(5, 7), nn.Linear(7, 3)
        self.divisor = divisor

    def forward(self, x):
        a = self.a(x)
        if self.divisor == "constant":
            return self.out(a / 2)
        if self.divisor == "computed":
            return self.out(a / (self.b(x).sigmoid() + 1))
        return self.out(torch.div(2.0, a.sigmoid() + 1))


@pytest.mark.parametrize("composite", ["attnlrp", "epsilon"])
@pytest.mark.parametrize("divisor", ["constant", "computed", "reciprocal"])
def test_the_support_table_says_which_divisions_are_refused(divisor, composite):
    model = Divisions(divisor)
    rule = next(row.rule for row in lrptext.support_table(model, composite=composite).rows
                if "div" in row.op)
    x = torch.randn(2, 5)
    if divisor == "constant":
        assert rule == "passes to the non-constant operand"
        assert torch.isfinite(lrptext.explain(model, x, composite=composite).relevance).all()
    else:
        assert rule.startswith("REFUSED")
        with pytest.raises(UnsupportedLayerError, match="multiplies or divides relevance-carrying tensors"):
            lrptext.explain(model, x, composite=composite)


def _modernbert(seed=0):
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    config = ModernBertConfig(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                              num_attention_heads=2, max_position_embeddings=64, global_attn_every_n_layers=2,
                              local_attention=4, pad_token_id=0, bos_token_id=1, eos_token_id=1, cls_token_id=1,
                              sep_token_id=1, num_labels=3, classifier_pooling="mean", attn_implementation="sdpa")
    torch.manual_seed(seed)
    model = ModernBertForSequenceClassification(config).eval().double()
    torch.nn.init.zeros_(model.classifier.bias)  # its only bias
    ids = torch.randint(2, 64, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:], mask[2, 7:] = 0, 0
    return model, ids, mask


def test_modernbert_conserves_and_pads_with_nothing():
    pytest.importorskip("transformers")
    model, ids, mask = _modernbert()
    table = str(lrptext.support_table(model, composite="attnlrp"))
    assert "aten.unbind" in table and "split" in table  # q, k, v
    assert any("aten.mul" in line and "AttnLRP" in line for line in table.splitlines())  # the GLU
    explainer = lrptext.Explainer(model, composite="cp_lrp", epsilon=1e-12)
    e = explainer.explain({"input_ids": ids, "attention_mask": mask})
    # CP-LRP without biases conserves the logit through the rotary embeddings, the cut and the gated units
    assert ((e.relevance.sum(1) - e.initial) / e.initial).abs().max() < 1e-7
    assert (e.relevance[mask == 0] == 0).all()
    for i, n in enumerate(mask.sum(1).tolist()):  # each sequence alone gets what it gets in the padded batch
        alone = explainer.explain({"input_ids": ids[i:i + 1, :n], "attention_mask": mask[i:i + 1, :n]},
                                  target=e.target[i:i + 1])
        torch.testing.assert_close(alone.relevance[0], e.relevance[i, :n], rtol=1e-9, atol=1e-12)
    attn = lrptext.explain(model, {"input_ids": ids, "attention_mask": mask}, composite="attnlrp")
    assert torch.isfinite(attn.relevance).all() and (attn.relevance[mask == 0] == 0).all()
    # a float mask (its mean pooling once read as a gate and refused) explains as the integer one
    floats = lrptext.explain(model, {"input_ids": ids, "attention_mask": mask.float()}, composite="attnlrp")
    torch.testing.assert_close(floats.relevance, attn.relevance, rtol=1e-12, atol=1e-15)
