"""Relevance handed between layers as two factors (lrptext.kernels.factored): where a dense layer reads a dropped
activation's output (Linear -> GELU -> Linear), its epsilon rule leaves R = act(z) ⊙ gradient unmultiplied and the
dense layer that produced z divides it by st(z) in one pass. Every way such relevance can travel must give what the
torch backend (no factors, tested against the float64 oracle elsewhere) gives: into a dense layer, into a kind that
takes no factors (LayerNorm), into a sum with other relevance, to the model's input, and when each layer's
relevance is recorded (layers=True); and in gradient form through sums, LayerNorm, transposes and shared inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrptext import Explainer
from lrptext.kernels import dispatch
from lrptext.kernels.factored import Factored


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


class ActivatedInput(nn.Module):
    """SiLU of the model's input, then a dense layer: the factored relevance reaches the input itself."""

    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(256, 3)

    def forward(self, x):
        return self.dense(nn.functional.silu(x))


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
    and a residual: attention's kernel writes the projections' epsilon quotients (lrptext/layers/projections.py).
    variant "shared-value": the value projection's output is also added to the result, so nothing is folded;
    "max-residual": the residual is the input's maximum, whose relevance reaches the input multiplied out before
    attention's (the folded products add to a tensor)."""

    def __init__(self, variant: str = "plain"):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(16, 16) for _ in range(4))
        self.out = nn.Linear(16, 3)
        self.variant = variant

    def forward(self, x):
        h = x.reshape(-1, 8, 16)
        b = h.shape[0]
        zq, zk, zv = self.q(h), self.k(h), self.v(h)
        q, k, v = (z.view(b, 8, 2, 8).transpose(1, 2) for z in (zq, zk, zv))
        a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = self.o(a.transpose(1, 2).reshape(b, 8, 16))
        y = y + (h.amax(-1, keepdim=True) if self.variant == "max-residual" else h)
        return self.out((y + zv if self.variant == "shared-value" else y).mean(1))


MODELS = {
    "dense-gelu-dense": lambda: nn.Sequential(nn.Linear(8, 256), nn.GELU(), nn.Linear(256, 128),
                                              nn.GELU(approximate="tanh"), nn.Linear(128, 3)),
    "layernorm-gelu-dense": lambda: nn.Sequential(nn.Linear(8, 256), nn.LayerNorm(256), nn.GELU(), nn.Linear(256, 3)),
    "residual": Residual,
    "activated-input": ActivatedInput,
    "rerouted": Rerouted,
    "token-mixing": TokenMixing,
    "attention": SelfAttention,
    "attention-shared-value": lambda: SelfAttention("shared-value"),
    "attention-max-residual": lambda: SelfAttention("max-residual"),
}


_WIDTHS = {"activated-input": 256, "rerouted": 128, "token-mixing": 128, "attention": 128,
           "attention-shared-value": 128, "attention-max-residual": 128}


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


@pytest.mark.parametrize("layers", [False, True])
@pytest.mark.parametrize("name", ["attention", "attention-shared-value", "attention-max-residual"])
def test_projections_fold_into_attention_only_where_their_steps_are_not_needed(name, layers, torch_products,
                                                                                monkeypatch):
    """Folded where nothing else reads the projections (the relevance is the torch backend's: the test above);
    not where the value projection's output is read again, nor where each layer's relevance is recorded."""
    from lrptext.layers import projections

    folded, fold = [], projections.fold
    monkeypatch.setattr(projections, "fold", lambda *a: folded.append(f := fold(*a)) or f)
    x = torch.randn(64, 128, dtype=torch.float64)
    Explainer(seeded(name), composite="attnlrp", backend="cpp").explain(x, target=1, layers=layers)
    assert any(f is not None for f in folded) == (name != "attention-shared-value" and not layers)
    assert len(folded) == (0 if layers else 1)  # (recorded relevance is multiplied out: no gradient form)


def test_a_factored_product_multiplies_out_in_its_gradient_buffer():
    z = torch.tensor([[-1.0, 0.0, 2.0]], dtype=torch.float64)
    gradient = torch.tensor([[3.0, 4.0, 5.0]], dtype=torch.float64)
    r = Factored(z, gradient, "relu").reshape(3)
    assert r.shape == (3,)
    out = r.tensor()
    assert out.tolist() == [0.0, 0.0, 10.0] and out.data_ptr() == gradient.data_ptr()
