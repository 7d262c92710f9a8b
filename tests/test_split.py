"""chunk, split and unbind: relevance of each piece goes back into its own slice of the cut tensor.

Oracles, none of them lrptext's cut: LRP-0 on bias-free linear nets is gradient x input (autograd, float64); the
same model written with explicit slices (lrptext's indexing, another kind) or with separate Linear layers for
q, k and v (its dense kind) gives the same relevance, captured by torch.fx and by torch.export; and cuts that
lrptext cannot follow raise, where relevance used to vanish without a word (a fused q, k, v projection cut by
chunk gave the attention branch nothing)."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrptext
from lrptext.errors import UnsupportedLayerError
from lrptext.rules import Norm


class Cut(nn.Module):
    """One bias-free projection cut into pieces, scaled, reordered and concatenated again into a bias-free head: a
    linear net, so LRP-0 is gradient x input."""

    def __init__(self, how: str, features: int = 5, width: int = 12):
        super().__init__()
        self.how = how
        self.project = nn.Linear(features, width, bias=False)
        self.head = nn.Linear(8 if how == "split_size" else width, 3, bias=False)

    def forward(self, x):
        h = self.project(x)
        if self.how == "chunk":
            a, b, c = h.chunk(3, dim=-1)  # 4 + 4 + 4
            pieces = [2 * a, -c, 0.5 * b]
        elif self.how == "torch.chunk":
            cut = torch.chunk(h, 3, -1)
            pieces = [2 * cut[0], -cut[-1], 0.5 * cut[1]]  # cut[-1] is cut[2]
        elif self.how == "split":
            a, b, c, d = torch.split(h, [4, 3, 1, 4], dim=1)
            pieces = [a, -3 * d, b, c]
        elif self.how == "split_size":
            a, b, c = h.split(4, -1)
            pieces = [a, c]  # b unused: its slice gets no relevance
        elif self.how == "unbind":
            rows = h.reshape(-1, 3, 4).unbind(1)
            pieces = [rows[0], -2 * rows[2], rows[1]]
        else:  # the chunk above written as slices
            a, b, c = h[..., :4], h[..., 4:8], h[..., 8:]
            pieces = [2 * a, -c, 0.5 * b]
        return self.head(torch.cat(pieces, -1))


def _assert_lrp0_is_gradient_times_input(model: nn.Module, features: int, **options) -> None:
    """On a bias-free linear net LRP-0 is gradient x input (autograd, float64), and keeps the whole logit."""
    model = model.double()
    x = torch.randn(4, features, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 2, 1, 2])
    logits = model(x)[torch.arange(len(x)), target]
    logits.sum().backward()
    e = lrptext.explain(model, x.detach(), target=target, composite="lrp0", **options)
    torch.testing.assert_close(e.relevance, (x.grad * x).detach(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(e.relevance.sum(1), logits.detach(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("how", ["chunk", "torch.chunk", "split", "split_size", "unbind"])
def test_lrp0_through_a_cut_is_gradient_times_input(how):
    torch.manual_seed(0)
    _assert_lrp0_is_gradient_times_input(Cut(how), 5)


def test_chunk_equals_the_same_model_written_with_slices():
    torch.manual_seed(1)
    chunked, sliced = Cut("chunk"), Cut("slices")
    sliced.load_state_dict(chunked.state_dict())
    x = torch.randn(6, 5)
    for composite in ("epsilon", "lrp0"):
        a = lrptext.explain(chunked, x, composite=composite).relevance
        b = lrptext.explain(sliced, x, composite=composite).relevance
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


class SelfAttention(nn.Module):
    """One attention block with q, k and v from one fused projection (cut by chunk) or from three."""

    def __init__(self, fused: bool, width: int = 8, heads: int = 2, classes: int = 3):
        super().__init__()
        self.fused, self.heads = fused, heads
        if fused:
            self.qkv = nn.Linear(width, 3 * width, bias=False)
        else:
            self.q, self.k, self.v = (nn.Linear(width, width, bias=False) for _ in range(3))
        self.out = nn.Linear(width, width, bias=False)
        self.head = nn.Linear(width, classes, bias=False)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1) if self.fused else (self.q(x), self.k(x), self.v(x))
        q, k, v = (t.reshape(B, T, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v)
        h = x + self.out(a.transpose(1, 2).reshape(B, T, D))
        return self.head(h.mean(1))


@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
def test_a_fused_qkv_cut_by_chunk_equals_three_projections(composite):
    torch.manual_seed(2)
    fused, separate = SelfAttention(True).double(), SelfAttention(False).double()
    _share_weights(fused, separate)
    _assert_same_explanation(fused, separate, torch.randn(2, 5, 8, dtype=torch.float64), composite)


def _share_weights(fused: SelfAttention, separate: SelfAttention) -> None:
    """The three projections take the fused one's rows for q, k and v; the rest is copied."""
    with torch.no_grad():
        for i, layer in enumerate((separate.q, separate.k, separate.v)):
            layer.weight.copy_(fused.qkv.weight[8 * i:8 * (i + 1)])
        separate.out.weight.copy_(fused.out.weight)
        separate.head.weight.copy_(fused.head.weight)


def _assert_same_explanation(a: nn.Module, b: nn.Module, inputs, composite: str) -> None:
    call = (lambda m: m(**inputs)) if isinstance(inputs, dict) else (lambda m: m(inputs))
    torch.testing.assert_close(call(a), call(b))  # the same network
    torch.testing.assert_close(lrptext.explain(a, inputs, composite=composite).relevance,
                               lrptext.explain(b, inputs, composite=composite).relevance, rtol=1e-9, atol=1e-12)


class Uncuttable(nn.Module):
    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.project = nn.Linear(4, 6)

    def forward(self, x):
        h = self.project(x)
        if self.how == "tensor_split":
            a, b = torch.tensor_split(h, 2, dim=1)
        elif self.how == "sliced pieces":
            a, b = h.chunk(3, -1)[0:2]
        else:  # a size read from the input's shape
            a, b = h.split(h.shape[1] // 2, -1)
        return a - b


@pytest.mark.parametrize("how", ["tensor_split", "sliced pieces", "size from the shape"])
def test_cuts_lrptext_cannot_follow_are_refused_not_silent(how):
    model = Uncuttable(how)
    with pytest.raises(UnsupportedLayerError, match="split|chunk"):
        lrptext.explain(model, torch.randn(2, 4), composite="epsilon")


def test_the_support_table_names_the_cut_and_its_pieces():
    rows = lrptext.support_table(SelfAttention(True), composite="attnlrp").rows
    kinds = {r.op: r.kind for r in rows}
    assert kinds["Tensor.chunk"] == "split"
    assert any(r.kind == "split_piece" for r in rows)


class Encoder(nn.Module):
    """SelfAttention from token ids, called with keyword tensors as a Hugging Face model is: captured by
    torch.export, whose aten.split / aten.unbind return lists. q, k, v from three projections, from one cut by
    chunk, or (as ModernBERT does) from one viewed as [B, T, 3, D] and unbound."""

    def __init__(self, how: str, width: int = 8, heads: int = 2):
        super().__init__()
        self.how, self.heads = how, heads
        self.embedding = nn.Embedding(30, width)
        self.block = SelfAttention(how != "separate", width, heads)

    def forward(self, input_ids, attention_mask=None):
        x = self.embedding(input_ids)
        if self.how != "unbind":
            return self.block(x)
        B, T, D = x.shape
        q, k, v = self.block.qkv(x).view(B, T, 3, D).unbind(2)
        q, k, v = (t.reshape(B, T, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v)
        h = x + self.block.out(a.transpose(1, 2).reshape(B, T, D))
        return self.block.head(h.mean(1))


@pytest.mark.parametrize("how", ["chunk", "unbind"])
@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
def test_cuts_in_a_torch_export_graph_equal_three_projections(how, composite):
    torch.manual_seed(3)
    cut, separate = Encoder(how).double(), Encoder("separate").double()
    separate.embedding.load_state_dict(cut.embedding.state_dict())
    _share_weights(cut.block, separate.block)
    _assert_same_explanation(cut, separate, {"input_ids": torch.randint(0, 30, (2, 6))}, composite)


class Reuses(nn.Module):
    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.a = nn.Linear(6, 12, bias=False)
        self.b = nn.Linear(12, 3, bias=False)

    def forward(self, x):
        h = self.a(x)
        if self.how == "sort indices":  # only the integer indices of a sort: a mask, no relevance through it
            return self.b(h * (torch.sort(h, -1)[1] < 6))
        if self.how == "topk indices":
            return self.b(h * (h.topk(3, -1).indices.sum(-1, keepdim=True) > 10))
        if self.how == "sort values":  # a float value of an operation that returns several: refused
            return self.b(torch.sort(h, -1)[0])
        if self.how == "whole tuple":
            return self.b(torch.cat(h.chunk(2, -1), -1))
        p, q = h.chunk(2, -1)  # "concatenations summed"
        return self.b(torch.cat([p, q], -1) + torch.cat([q, p], -1))


@pytest.mark.parametrize("how", ["sort indices", "topk indices"])
def test_integer_items_of_several_outputs_stay_masks(how):
    torch.manual_seed(4)
    _assert_lrp0_is_gradient_times_input(Reuses(how), 6)


@pytest.mark.parametrize("how,message", [("sort values", "no rule for torch.sort .* returns several tensors"),
                                         ("whole tuple", "reach another operation as one tuple")])
def test_float_items_of_unsupported_tuples_and_whole_tuples_are_refused(how, message):
    with pytest.raises(UnsupportedLayerError, match=message):
        lrptext.explain(Reuses(how), torch.randn(2, 6), composite="epsilon")


def test_pieces_concatenated_twice_and_summed():
    """Pieces into two concatenations that a sum meets (a concatenation's list of pieces crashed the indexing kind's
    check for factored relevance): LRP-0 with an unstabilised sum is gradient x input on this linear net."""
    torch.manual_seed(5)
    _assert_lrp0_is_gradient_times_input(Reuses("concatenations summed"), 6, layer_map={operator.add: Norm(0.0)})
