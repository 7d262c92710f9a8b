"""Relevance handed between layers as two factors (lrptext.kernels.factored): where a dense layer reads a dropped
activation's output (Linear -> GELU -> Linear), its epsilon rule leaves R = act(z) ⊙ gradient unmultiplied and the
dense layer that produced z divides it by st(z) in one pass. Every way such relevance can travel must give what the
torch backend (no factors, tested against the float64 oracle elsewhere) gives: into a dense layer, into a kind that
takes no factors (LayerNorm), into a sum with other relevance, to the model's input, and when each layer's
relevance is recorded (layers=True); and in gradient form through sums, LayerNorm, transposes and shared inputs."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from lrptext import Explainer, UnsupportedLayerError
from lrptext.kernels import dispatch
from lrptext.kernels.factored import Factored
from tolerances import assert_same_sums


@pytest.fixture
def torch_products(monkeypatch):
    """Every dense epsilon product through torch's BLAS and the core's element-wise steps (the path that factors),
    however small; the factored results it returns are counted."""
    from lrptext import _native

    monkeypatch.setattr(_native, "dense_product", "torch")
    monkeypatch.setattr(dispatch, "_TORCH_PRODUCT_FROM", 0)
    made = []
    product = dispatch._epsilon_torch_product

    def counted(*args):
        out = product(*args)
        made.append(isinstance(out, Factored))
        return out

    monkeypatch.setattr(dispatch, "_epsilon_torch_product", counted)
    return made


class Residual(nn.Module):
    """z = W1 x feeds both GELU -> W2 and a skip connection: its relevance is a factored share plus a tensor."""

    def __init__(self):
        super().__init__()
        self.up, self.down, self.out = nn.Linear(8, 256), nn.Linear(256, 256), nn.Linear(256, 3)

    def forward(self, x):
        z = self.up(x)
        return self.out(self.down(nn.functional.gelu(z)) + z)


class SkipOwner(nn.Module):
    """Residual sums whose skip connection may own the gradient both summands share (the branch's dense layer,
    behind a dropout, reads it before anything adds to the skip's relevance), or may not: "late-reader", a
    layer that reads the skip's value after the branch's dense layer, adds to the skip's relevance first."""

    def __init__(self, late_reader: bool = False):
        super().__init__()
        self.a, self.b, self.c, self.d = (nn.Linear(16, 16) for _ in range(4))
        self.drop, self.out, self.out2 = nn.Dropout(0.1), nn.Linear(16, 3), nn.Linear(16, 3)
        self.late_reader = late_reader

    def forward(self, x):
        h = self.a(x.reshape(-1, 8, 16))
        t = self.b(self.c(h))
        if self.late_reader:
            u = self.d(h)
            return self.out(self.drop(t) + h).mean(1) + self.out2(u).mean(1)
        y = self.drop(t) + h
        return self.out(self.drop(self.d(y)) + y).mean(1)


class PostNorm(nn.Module):
    """Post-norm residual blocks as BERT's: LayerNorm(h + dropout(W2 gelu(W1 h))) and LayerNorm(W3 h + h), the
    dense summand behind a dropout or not, first or second: LayerNorm's kernel writes the branch's epsilon quotient
    (add.dense_summand)."""

    def __init__(self):
        super().__init__()
        self.inp, self.w1, self.w2, self.w3 = nn.Linear(16, 16), nn.Linear(16, 32), nn.Linear(32, 16), nn.Linear(16, 16)
        self.norm1, self.norm2, self.drop = nn.LayerNorm(16), nn.LayerNorm(16), nn.Dropout(0.1)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        h = self.inp(x.reshape(-1, 8, 16))
        h = self.norm1(h + self.drop(self.w2(nn.functional.gelu(self.w1(h)))))
        h = self.norm2(self.w3(h) + h)
        return self.out(h).mean(1)


class BranchFirst(nn.Module):
    """Residual sums whose skip must not own the shared gradient: "late-activation", the branch's dense layer
    computed before the skip's (its activation applied at the sum), so the skip's step comes first in the pass;
    "parallel", attention's folded projections add to the relevance at the block's input at attention's step,
    which lies between the branch's dense layer and the sum."""

    def __init__(self, variant: str):
        super().__init__()
        self.fc, self.fc2, self.skip = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)
        self.q, self.k, self.v = (nn.Linear(16, 16) for _ in range(3))
        self.out, self.out2 = nn.Linear(16, 3), nn.Linear(16, 3)
        self.variant = variant

    def forward(self, x):
        h = x.reshape(-1, 8, 16)
        if self.variant == "late-activation":
            u = self.fc(h)
            return self.out(torch.relu(self.skip(h)) + nn.functional.gelu(u)).mean(1)
        h0 = self.skip(h)
        b = h0.shape[0]
        u = self.fc(h0)
        q, k, v = (p(h0).view(b, 8, 2, 8).transpose(1, 2) for p in (self.q, self.k, self.v))
        m = self.fc2(nn.functional.gelu(u))
        a = nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, 8, 16)
        return self.out(h0 + m).mean(1) + self.out2(a).mean(1)


class SequenceFirst(nn.Module):
    """Self-attention with the heads merged into the batch, [batch x heads, tokens, dim] from sequence-first
    [tokens, batch, width] (torch.nn.MultiheadAttention's and fairseq's layout): no view of a column block of the
    projections computed as one product merges those axes (lrptext copies it, as the model's own contiguous
    output is viewed)."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(16, 16) for _ in range(3))
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        h = x.reshape(-1, 8, 16).transpose(0, 1)
        t, b = h.shape[0], h.shape[1]
        q, k, v = (p(h).view(t, b * 2, 8).transpose(0, 1).view(b, 2, t, 8) for p in (self.q, self.k, self.v))
        a = nn.functional.scaled_dot_product_attention(q, k, v).reshape(b * 2, t, 8)
        return self.out(a.transpose(0, 1).reshape(t, b, 16).mean(0))


class ActivatedInput(nn.Module):
    """SiLU of the model's input, then a dense layer: the factored relevance reaches the input itself."""

    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(256, 3)

    def forward(self, x):
        return self.dense(nn.functional.silu(x))


class ActivatedSum(nn.Module):
    """The sum of two dense layers through an activation, then a dense layer: the sum's relevance arrives
    factored through the activation (act(s) times a gradient) and the sum divides it by st(s) itself, in place
    (ReLU, SiLU) or into a buffer of its own (GELU)."""

    def __init__(self, activation: str):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(8, 256), nn.Linear(8, 256), nn.Linear(256, 3)
        self.activation = {"gelu": nn.functional.gelu, "silu": nn.functional.silu, "relu": torch.relu}[activation]

    def forward(self, x):
        return self.out(self.activation(self.a(x) + self.b(x)))


class Rerouted(nn.Module):
    """Gradient form through every route: a residual sum reached through two transposes (its gradient a view), a
    value added to itself, LayerNorm, two dense layers and a residual sharing one input (the gradients they add
    to), and a sum of sums (one input reached by two sums)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)
        self.norm, self.out = nn.LayerNorm(16), nn.Linear(16, 3)

    def forward(self, x):
        h = self.a(x.reshape(-1, 8, 16))
        y = h + self.b(h).transpose(1, 2).transpose(1, 2)
        y = self.norm(y + y)
        return self.out((y + self.c(y) + self.b(y)).mean(1))


class TokenMixing(nn.Module):
    """A dense layer across tokens (MLP-Mixer): factored relevance moved by transposes reaches a dense layer as
    non-contiguous views (at batch 1 no reshape copies them)."""

    def __init__(self):
        super().__init__()
        self.a, self.tokens, self.out = nn.Linear(16, 16), nn.Linear(8, 8), nn.Linear(16, 3)

    def forward(self, x):
        h = self.a(x.reshape(-1, 8, 16))
        return self.out(self.tokens(h.transpose(1, 2)).transpose(1, 2)).mean(1)


class SelfAttention(nn.Module):
    """Causal self-attention over heads split off three projections of one input by views, an output projection
    and a residual: attention's kernel writes the projections' epsilon quotients (lrptext/layers/projections.py)
    where the variant allows it. "shared-value": the value projection's output is added to the result too;
    "max-residual": the residual is the input's maximum, whose relevance reaches the input multiplied out before
    attention's; "reshaped-residual": the residual reaches the input through a reshape (factored on a view of
    it); "gated": a gate over the input is computed between the projections and added to the result;
    "permuted-query": the query's heads are the last factor of its width (rows of a head not contiguous);
    "activated": the projections read GELU(W x), which the forward pass drops from 8,192 elements on (64 rows),
    so that their steps read it through their kernel's activation, which the fold does not take (it folds at 2)."""

    def __init__(self, variant: str = "plain"):
        super().__init__()
        self.q, self.k, self.v, self.o, self.g = (nn.Linear(16, 16) for _ in range(5))
        self.out = nn.Linear(16, 3)
        self.variant = variant

    def forward(self, x):
        h = x.reshape(-1, 8, 16)
        b = h.shape[0]
        a = nn.functional.gelu(self.g(h)) if self.variant == "activated" else h
        zq, zk = self.q(a), self.k(a)
        gate = self.g(h) if self.variant == "gated" else 0.0
        zv = self.v(a)
        k, v = (z.view(b, 8, 2, 8).transpose(1, 2) for z in (zk, zv))
        q = zq.view(b, 8, 8, 2).permute(0, 3, 1, 2) if self.variant == "permuted-query" else (
            zq.view(b, 8, 2, 8).transpose(1, 2))
        a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = self.o(a.transpose(1, 2).reshape(b, 8, 16)) + gate
        residual = {"max-residual": lambda: h.amax(-1, keepdim=True),
                    "reshaped-residual": lambda: h.reshape(b, 8, 16)}.get(self.variant, lambda: h)()
        y = y + residual
        return self.out((y + zv if self.variant == "shared-value" else y).mean(1))


# Whether each variant's projections fold, under attnlrp and cp_lrp (where only the value projection receives)
FOLDS = {"plain": (True, True), "shared-value": (False, False), "max-residual": (True, True),
         "reshaped-residual": (False, False), "gated": (False, True), "permuted-query": (False, True),
         "activated": (False, False)}


MODELS = {
    "dense-gelu-dense": lambda: nn.Sequential(nn.Linear(8, 256), nn.GELU(), nn.Linear(256, 128),
                                              nn.GELU(approximate="tanh"), nn.Linear(128, 3)),
    "layernorm-gelu-dense": lambda: nn.Sequential(nn.Linear(8, 256), nn.LayerNorm(256), nn.GELU(), nn.Linear(256, 3)),
    "residual": Residual,
    "post-norm": PostNorm,
    "activated-input": ActivatedInput,
    "rerouted": Rerouted,
    "token-mixing": TokenMixing,
    "skip-owner": SkipOwner,
    "sequence-first": SequenceFirst,
    "late-activation": functools.partial(BranchFirst, "late-activation"),
    "parallel-block": functools.partial(BranchFirst, "parallel"),
    "skip-owner-late-reader": functools.partial(SkipOwner, late_reader=True),
    **{f"activated-sum-{act}": functools.partial(ActivatedSum, act) for act in ("gelu", "silu", "relu")},
    **{f"attention-{variant}": functools.partial(SelfAttention, variant) for variant in FOLDS},
}


_WIDTHS = {"activated-input": 256, "rerouted": 128, "token-mixing": 128, "skip-owner": 128, "post-norm": 128,
           "skip-owner-late-reader": 128, "sequence-first": 128, "late-activation": 128, "parallel-block": 128,
           **{f"attention-{variant}": 128 for variant in FOLDS}}


def seeded(name: str) -> nn.Module:
    torch.manual_seed(7)
    return MODELS[name]().double().eval()


@pytest.mark.parametrize("layers", [False, True])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_factored_relevance_gives_what_the_torch_backend_gives(name, layers, torch_products):
    model = seeded(name)
    # 64 x 256 activations: large enough that the forward pass drops them (the layer after reads act(z))
    x = torch.randn(1 if name == "token-mixing" else 64, _WIDTHS.get(name, 8), dtype=torch.float64)
    got = Explainer(model, composite="attnlrp", backend="cpp").explain(x, target=1, layers=layers)
    assert any(torch_products)  # the path under test was taken
    want = Explainer(model, composite="attnlrp", backend="torch").explain(x, target=1, layers=layers)
    torch.testing.assert_close(got.relevance, want.relevance, rtol=1e-10, atol=1e-12)
    if layers:
        assert got.layer_relevance.keys() == want.layer_relevance.keys()
        for key, value in want.layer_relevance.items():
            torch.testing.assert_close(got.layer_relevance[key], value, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("late_reader", [False, True])
def test_a_skip_connection_owns_the_shared_gradient_only_where_nothing_reads_it_first(late_reader, torch_products,
                                                                                     monkeypatch):
    """A residual sum hands one gradient to both summands; the skip connection's relevance owns it (the layers
    reading the skip add to it in place) where the branch's dense layer has read it before any of them: both sums
    of the plain model, neither of "late-reader" (the sum of its two outputs has no dense summand). The test
    above checks the explanations (an owner where a reader comes first would have that reader's share added to
    the gradient before the branch reads it)."""
    from lrptext.layers import add

    kept, keeper = [], add._keeper
    monkeypatch.setattr(add, "_keeper", lambda *a: kept.append(k := keeper(*a)) or k)
    model = seeded("skip-owner-late-reader" if late_reader else "skip-owner")
    Explainer(model, composite="attnlrp", backend="cpp").explain(torch.randn(4, 128, dtype=torch.float64), target=1)
    owners = [k is not None for k in kept]  # in the pass's order: the last sum first
    assert owners == ([False, False] if late_reader else [True, True])


def test_layer_norm_writes_the_quotient_of_the_dense_summand_with_its_own_steps_bits(torch_products, monkeypatch):
    """LayerNorm's kernel writes the epsilon quotient of the dense layer summed into its input, which that layer's
    step then takes instead of dividing: for both blocks of the post-norm model (the test comparing with the torch
    backend above covers it in float64), and in float32 to the bit of the steps taken apart."""
    from lrptext.layers import layer_norm

    found, find = [], layer_norm.dense_summand
    monkeypatch.setattr(layer_norm, "dense_summand", lambda *a: found.append(f := find(*a)) or f)
    torch.manual_seed(7)
    model, x = PostNorm().eval(), torch.randn(64, 128)
    got = Explainer(model, composite="attnlrp", backend="cpp").explain(x, target=1)
    assert [f[0].qualified_name for f in found if f is not None] == ["w3", "w2"]  # (the pass's order)
    monkeypatch.setattr(layer_norm, "dense_summand", lambda *a: None)
    want = Explainer(model, composite="attnlrp", backend="cpp").explain(x, target=1)
    assert torch.equal(got.relevance, want.relevance)


@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
@pytest.mark.parametrize("variant", sorted(FOLDS))
def test_projections_fold_into_attention_only_where_they_give_what_their_steps_give(variant, composite,
                                                                                     torch_products, monkeypatch):
    """Where the projections fold, the explanation is the one their own steps give: bit for bit in float32 where
    each product is a layer's own (CP-LRP's value projection), to float32's rounding where the three projections'
    products are one over their stacked weights (the test above compares both with the torch backend in float64);
    where another reader of their outputs or input would see its share added in another order, or a query's rows
    are not whole, they take their own steps."""
    from lrptext.layers import projections

    folded, fold = [], projections.fold
    monkeypatch.setattr(projections, "fold", lambda *a: folded.append(f := fold(*a)) or f)
    torch.manual_seed(7)
    model = SelfAttention(variant).eval()
    x = torch.randn(64, 128)
    got = Explainer(model, composite=composite, backend="cpp").explain(x, target=1)
    assert len(folded) == 1 and (folded[0] is not None) == FOLDS[variant][composite == "cp_lrp"]
    monkeypatch.setattr(projections, "fold", lambda *a: None)
    want = Explainer(model, composite=composite, backend="cpp").explain(x, target=1)
    same_order = composite == "cp_lrp" or folded[0] is None
    if not same_order:
        assert folded[0].stacked is not None  # (all three projections receive: one product)
    assert_same_sums(got, want, same_order)
    layered = Explainer(model, composite=composite, backend="cpp").explain(x, target=1, layers=True)
    assert len(folded) == 1  # per-layer sums: relevance multiplied out at every node, no gradient form to fold
    scale = want.relevance.abs().max().item()  # (multiplied out at every node: float32 rounding of its own)
    torch.testing.assert_close(layered.relevance, want.relevance, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("model", ["post-norm", "attention", "activated"])
def test_what_relevance_steps_keep_for_the_next_explanation_serves_every_later_call(model, torch_products,
                                                                                   monkeypatch):
    """Relevance steps keep what they work out from the graph and the rules (RelevancePass.planned: a sum's
    keeper, LayerNorm's dense summand, attention's folded projections) from one explanation to the next. One
    Explainer through calls that fuse and calls that cannot (per-layer sums; a batch whose products stay in the
    core, which neither fuses nor folds; projections reading a dropped activation) gives, call by call, what a
    fresh Explainer gives, bit for bit (a fold taken or refused where it should not be changes the rounding)."""
    from lrptext.layers import add, projections

    torch.manual_seed(7)
    net = (PostNorm() if model == "post-norm" else SelfAttention("plain" if model == "attention" else model)).eval()
    worked_out, folds = [], []
    for module, name in ((add, "_earlier_keeps"), (add, "_dense_branches"), (projections, "_foldable")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, original=original: worked_out.append(1) or original(*a))
    fold = projections.fold
    monkeypatch.setattr(projections, "fold", lambda *a: folds.append(f := fold(*a)) or f)
    kept = Explainer(net, composite="attnlrp", backend="cpp")
    calls = [(2, False), (64, False), (64, True), (2, False), (64, False), (64, False)]
    for i, (rows, layers) in enumerate(calls):
        # the fifth call's products below torch's threshold: the core's, unfused
        monkeypatch.setattr(dispatch, "_TORCH_PRODUCT_FROM", 1 << 40 if i == 4 else 0)
        x = torch.randn(rows, 128)
        before = len(worked_out)
        got = kept.explain(x, target=1, layers=layers)
        if i == 3:
            assert len(worked_out) == before  # (kept from the first call)
        want = Explainer(net, composite="attnlrp", backend="cpp").explain(x, target=1, layers=layers)
        assert torch.equal(got.relevance, want.relevance), (rows, layers)
        if layers:
            assert all(torch.equal(got.layer_relevance[k], v) for k, v in want.layer_relevance.items())
    assert worked_out  # the path under test was taken
    if model == "activated":  # (each call's kept and fresh Explainer: two folds asked per call)
        assert [f is not None for f in folds[:4]] == [True, True, False, False]


@pytest.mark.parametrize("variant", ["plain", "permuted-query"])
def test_the_forward_pass_through_attention_predicts_what_the_model_does(variant):
    """Heads split off as the last factor of the width have rows that are not contiguous: torch's CPU flash
    attention, which lrptext calls directly for its log-sum-exp, reads them as if they were (garbage); such
    operands go through F.scaled_dot_product_attention instead."""
    torch.manual_seed(7)
    model = SelfAttention(variant).eval()
    x = torch.randn(4, 128)
    e = Explainer(model, composite="attnlrp").explain(x, target=1)
    with torch.no_grad():
        torch.testing.assert_close(e.prediction, model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("edit", ["data", "data-columns", "version"])
def test_an_explainer_sees_the_projections_weights_as_they_are_now(edit):
    """The projections computed as one product read their weights as they are at each explanation: an edit
    through .data, which bumps no version (so the Explainer does not capture the model again), reaches the
    prediction and the relevance as it reaches the model."""
    torch.manual_seed(7)
    model = SelfAttention("plain").eval()
    x = torch.randn(4, 128)
    explainer = Explainer(model, composite="attnlrp")
    explainer.explain(x, target=1)
    if edit == "data":
        model.q.weight.data.mul_(2)
        model.v.bias.data.add_(3)
    elif edit == "data-columns":  # (every column but the first: samples a whole row apart would miss it)
        model.q.weight.data[:, 1:] *= 2
    else:
        with torch.no_grad():
            model.q.weight.mul_(2)
            model.v.bias.add_(3)
    got = explainer.explain(x, target=1)
    want = Explainer(model, composite="attnlrp").explain(x, target=1)
    with torch.no_grad():
        torch.testing.assert_close(got.prediction, model(x), rtol=1e-5, atol=1e-6)
    assert torch.equal(got.relevance, want.relevance)


def test_a_view_the_model_cannot_take_fails_as_in_the_model():
    """Only values lrptext lays out otherwise (stacked projections' column blocks) are copied for a view."""
    class Transposed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.out = nn.Linear(16, 16), nn.Linear(128, 3)

        def forward(self, x):
            return self.out(self.a(x.reshape(-1, 8, 16)).transpose(1, 2).view(x.shape[0], -1))

    model = Transposed().eval()
    x = torch.randn(4, 128)
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        model(x)
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        Explainer(model, composite="attnlrp").explain(x, target=1)


def test_sequence_first_heads_are_copied_where_no_view_can_take_them():
    torch.manual_seed(7)
    model = SequenceFirst().eval()
    x = torch.randn(4, 128)
    e = Explainer(model, composite="attnlrp").explain(x, target=1)
    with torch.no_grad():
        torch.testing.assert_close(e.prediction, model(x), rtol=1e-5, atol=1e-6)


class SharedOperands(nn.Module):
    """Operands that F.scaled_dot_product_attention broadcasts, or (`expanded`) the model expands first: "memory",
    learned keys and values one for the batch ([1, heads, slots, dim]; "empty-memory": no slots); "multi-query",
    one head of keys and values computed from the input for two heads of queries."""

    def __init__(self, variant: str, expanded: bool):
        super().__init__()
        self.q, self.out = nn.Linear(16, 16), nn.Linear(16, 3)
        self.k, self.v = nn.Linear(16, 8), nn.Linear(16, 8)
        slots = 0 if variant == "empty-memory" else 5
        self.keys, self.values = nn.Parameter(torch.randn(1, 2, slots, 8)), nn.Parameter(torch.randn(1, 2, slots, 8))
        self.variant, self.expanded = variant, expanded

    def forward(self, x):
        h = x.reshape(-1, 8, 16)
        b = h.shape[0]
        q = self.q(h).view(b, 8, 2, 8).transpose(1, 2)
        if self.variant == "multi-query":
            k, v = self.k(h).view(b, 8, 1, 8).transpose(1, 2), self.v(h).view(b, 8, 1, 8).transpose(1, 2)
        else:
            k, v = self.keys, self.values
        if self.expanded:
            k, v = k.expand(b, 2, -1, -1), v.expand(b, 2, -1, -1)
        a = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.out(a.transpose(1, 2).reshape(b, 8, 16).mean(1))


@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
@pytest.mark.parametrize("variant", ["memory", "empty-memory", "multi-query"])
def test_operands_attention_broadcasts_are_broadcast_as_torch_does(variant, composite):
    """torch's CPU flash attention, called directly, reads keys and values of one sample as if each sample had its
    own (garbage) and stops the process on an empty axis (a floating-point exception); such operands take
    F.scaled_dot_product_attention, and attention's relevance step expands them as it does, each shared
    operand's relevance summed back: the same explanation as with them expanded in the model (where multi-query's
    keys and values carry relevance back to the input)."""
    torch.manual_seed(7)
    broadcast = SharedOperands(variant, expanded=False).double().eval()
    expanded = SharedOperands(variant, expanded=True).double().eval()
    expanded.load_state_dict(broadcast.state_dict())
    x = torch.randn(4, 128, dtype=torch.float64)
    if composite == "cp_lrp" and variant != "multi-query":  # A and V constants: nothing reaches the queries
        with pytest.raises(UnsupportedLayerError, match="relevance vanishes"):
            Explainer(broadcast, composite=composite).explain(x, target=1)
        return
    assert_explained_alike(broadcast, expanded, x, composite)


def assert_explained_alike(model: nn.Module, alike: nn.Module, x: torch.Tensor, composite: str) -> None:
    """model predicts what it computes, and explains as `alike`, the same computation written otherwise (float64)."""
    got = Explainer(model, composite=composite).explain(x, target=1)
    want = Explainer(alike, composite=composite).explain(x, target=1)
    with torch.no_grad():
        torch.testing.assert_close(got.prediction, model(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got.relevance, want.relevance, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(got.delta, want.delta, rtol=1e-10, atol=1e-13)


class Headless(nn.Module):
    """Attention over [batch, tokens, dim] operands without a head axis, which torch takes as one head; or (`heads`)
    the same with a head axis of one made explicit; with a causal flag or a [batch, tokens, tokens] mask."""

    def __init__(self, heads: bool, mask: str):
        super().__init__()
        self.q, self.k, self.v, self.out = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 3)
        self.heads, self.mask = heads, mask
        allowed = torch.ones(4, 8, 8, dtype=torch.bool)
        allowed[1, :, 5:] = allowed[3, :, 2:] = False  # keys padded away, per sample (a batch of 4)
        self.register_buffer("allowed", allowed)

    def forward(self, x):
        h = x.reshape(4, 8, 16)
        q, k, v = self.q(h), self.k(h), self.v(h)
        mask = self.allowed if self.mask == "padding" else None
        if self.heads:
            q, k, v = q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)
            mask = None if mask is None else mask.unsqueeze(1)
        a = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.mask == "causal")
        return self.out(a.reshape(h.shape).mean(1))


@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
@pytest.mark.parametrize("mask", ["none", "causal", "padding"])
def test_attention_without_a_head_axis_is_one_head(mask, composite):
    """F.scaled_dot_product_attention takes 3-D operands (no head axis): the explanation is the one of the same
    model with a head axis of one (was: the kernel's 'query must be 4-D' error)."""
    torch.manual_seed(7)
    headless = Headless(False, mask).double().eval()
    heads = Headless(True, mask).double().eval()
    heads.load_state_dict(headless.state_dict())
    assert_explained_alike(headless, heads, torch.randn(4, 128, dtype=torch.float64), composite)


def test_a_factored_product_multiplies_out_in_its_gradient_buffer():
    z = torch.tensor([[-1.0, 0.0, 2.0]], dtype=torch.float64)
    gradient = torch.tensor([[3.0, 4.0, 5.0]], dtype=torch.float64)
    r = Factored(z, gradient, "relu").reshape(3)
    assert r.shape == (3,)
    out = r.tensor()
    assert out.tolist() == [0.0, 0.0, 10.0] and out.data_ptr() == gradient.data_ptr()
