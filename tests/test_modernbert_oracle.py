"""ModernBERT (AttnLRP, CP-LRP) against an independent float64 oracle.

The oracle re-implements ModernBertForSequenceClassification's forward from the model's weights, every operation a
torch.autograd.Function whose backward *is* its LRP rule, so that torch.autograd.grad(logits, word_embeddings,
one-hot × logits) is the relevance of every word-embedding row (the approach of tests/test_transformers.py). It is
written from the rule table of docs/conventions.md ("Transformers (AttnLRP, CP-LRP)"), not from lrptext's code.
What ModernBERT adds to BERT, and how relevance crosses it:

    fused Wqkv cut by view/unbind:    routing, each piece's relevance back into its slice (plain autograd)
    rotary q' = q ⊙ cos + rot(q) ⊙ sin: products with constants and a sum: R_q = q ⊙ Jᵀ (R_q' / q')
    local (sliding-window) attention: the window is part of the mask; masked keys get 0, a query with no key
                                      (padding beyond the window) has output 0 and passes nothing
    gated unit act(a) ⊙ b:            the uniform rule, R_act(a) = R_b = ½ R, under both composites
    pre-norm residual stream:         h + f(norm(h)) split in proportion, without a stabiliser
    masked mean pooling:              × mask and ÷ count pass relevance, the sum over tokens split in proportion
    LayerNorm without β (norm_bias=False): R_z = R_y, R_x = x ⊙ (s − mean s), s = R_z / st(z), z = x − mean x

and, as for BERT, st(z) = z + 1e-6 sign(z); Linear R_x = x ⊙ Wᵀ (R_z / st(z)); GELU the identity; attention under
AttnLRP R_A = ½ A ⊙ (G Vᵀ), R_V = ½ V ⊙ (Aᵀ G), G = R_O / O, R_S = S ⊙ (R_A − A Σ_k R_A), R_Q = ½ Q ⊙ (H K),
R_K = ½ K ⊙ (Hᵀ Q), H = scale R_S / S; under CP-LRP the probabilities are constants: R_V = V ⊙ (Aᵀ G) only.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402

transformers = pytest.importorskip("transformers")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.autograd import Function  # noqa: E402

import lrptext  # noqa: E402
from oracle_rules import (  # noqa: E402
    Identity,
    ProportionalAdd,
    ProportionalSum,
    assert_relevance,
    ratio,
    st,
)

COMPOSITES = ("attnlrp", "cp_lrp")
LENGTHS = (9, 5, 7)  # right-padded to 9; in the sliding layer (window ±2) padded queries 7, 8 of the 2nd row see no key


# ------------------------------------------------------------------------------------ the rules as Functions


class EpsLinear(Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        z = F.linear(x, weight, bias)
        ctx.save_for_backward(x, weight, z)
        return z

    @staticmethod
    def backward(ctx, r):
        x, weight, z = ctx.saved_tensors
        return x * ((r / st(z)) @ weight), None, None


class LayerNormRule(Function):
    """y = γ z / σ with z = x − mean x and no β: σ constant, γ passes, the centring by the ε-rule."""

    @staticmethod
    def forward(ctx, x, gamma, eps):
        y = F.layer_norm(x, x.shape[-1:], gamma, None, eps)
        z = x - x.mean(-1, keepdim=True)
        ctx.save_for_backward(x, z)
        return y

    @staticmethod
    def backward(ctx, r):
        x, z = ctx.saved_tensors
        s = r / st(z)
        return x * (s - s.mean(-1, keepdim=True)), None, None


class GatedProduct(Function):
    """act(a) ⊙ b: the uniform rule, each operand half of the product's relevance, no stabiliser."""

    @staticmethod
    def forward(ctx, a, b):
        return a * b

    @staticmethod
    def backward(ctx, r):
        return 0.5 * r, 0.5 * r


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Rotary(Function):
    """q' = q ⊙ cos + rotate_half(q) ⊙ sin, a linear map J of q: gradient × input, R_q = q ⊙ Jᵀ (R_q' / q').
    Jᵀ u = u ⊙ cos − rotate_half(u ⊙ sin). The model rounds q to float32 first (apply_rotary_pos_emb's
    q.float()); the cast passes relevance, and q here is the rounded value, the product's operand."""

    @staticmethod
    def forward(ctx, q, cos, sin):
        q = q.float().to(cos.dtype)
        out = q * cos + rotate_half(q) * sin
        ctx.save_for_backward(q, cos, sin, out)
        return out

    @staticmethod
    def backward(ctx, r):
        q, cos, sin, out = ctx.saved_tensors
        g = ratio(r, out)
        return q * (g * cos - rotate_half(g * sin)), None, None


class Attention(Function):
    """O = softmax(scale Q Kᵀ over the allowed keys) V, q, k, v [B, heads, T, d], allowed [B, 1, T, T] (bool);
    a query with no allowed key gets O = 0."""

    @staticmethod
    def forward(ctx, q, k, v, allowed, scale, mode):
        s = scale * q @ k.transpose(-1, -2)
        a = torch.softmax(s.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)
        o = a @ v
        ctx.save_for_backward(q, k, v, allowed, s, a, o)
        ctx.scale, ctx.mode = scale, mode
        return o

    @staticmethod
    def backward(ctx, r_o):
        q, k, v, allowed, s, a, o = ctx.saved_tensors
        g = ratio(r_o, o)
        if ctx.mode == "cp_lrp":
            return None, None, v * (a.transpose(-1, -2) @ g), None, None, None
        r_a = 0.5 * a * (g @ v.transpose(-1, -2))
        r_v = 0.5 * v * (a.transpose(-1, -2) @ g)
        r_s = (s * (r_a - a * r_a.sum(-1, keepdim=True))).masked_fill(~allowed, 0.0)
        h = ctx.scale * ratio(r_s, s)
        r_q = 0.5 * q * (h @ k)
        r_k = 0.5 * k * (h.transpose(-1, -2) @ q)
        return r_q, r_k, r_v, None, None, None


# ------------------------------------------------------------------------------------ the oracle's forward


def linear(m: nn.Linear, x):
    return EpsLinear.apply(x, m.weight, m.bias)


def layer_norm(m: nn.Module, x):
    if isinstance(m, nn.Identity):  # layer 0's attn_norm
        return x
    assert m.bias is None
    return LayerNormRule.apply(x, m.weight, m.eps)


def rotary_cos_sin(config, layer_type: str, t: int, dtype):
    """As ModernBertRotaryEmbedding: inverse frequencies and angles in float32, then cast to the model's dtype."""
    d = config.hidden_size // config.num_attention_heads
    theta = config.rope_parameters[layer_type]["rope_theta"]
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float) / d))
    freqs = torch.arange(t, dtype=torch.float)[:, None] * inv_freq
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def allowed_keys(config, layer_type: str, mask: torch.Tensor) -> torch.Tensor:
    """[B, 1, T, T]: the real keys, and in a sliding layer only those within local_attention // 2 of the query."""
    keys = mask.bool()[:, None, None, :]
    if layer_type == "full_attention":
        return keys.expand(-1, -1, mask.shape[1], -1)
    position = torch.arange(mask.shape[1])
    return keys & ((position[:, None] - position[None, :]).abs() <= config.local_attention // 2)


def attention(att, x, allowed, cos, sin, heads, mode):
    b, t, hidden = x.shape
    d = hidden // heads
    q, k, v = linear(att.Wqkv, x).view(b, t, 3, heads, d).unbind(dim=2)
    q, k, v = (y.transpose(1, 2) for y in (q, k, v))
    o = Attention.apply(Rotary.apply(q, cos, sin), Rotary.apply(k, cos, sin), v, allowed, d ** -0.5, mode)
    return linear(att.Wo, o.transpose(1, 2).reshape(b, t, hidden))


def gated_mlp(mlp, x):
    a, gate = linear(mlp.Wi, x).chunk(2, dim=-1)
    return linear(mlp.Wo, GatedProduct.apply(Identity.apply(a, mlp.act), gate))


def oracle_logits(model, ids, mask, mode):
    """(the word-embedding rows (leaf), the logits)."""
    config, base = model.config, model.model
    word = base.embeddings.tok_embeddings.weight[ids].detach().requires_grad_(True)
    h = layer_norm(base.embeddings.norm, word)
    t = ids.shape[1]
    for layer in base.layers:
        kind = layer.attention_type
        cos, sin = rotary_cos_sin(config, kind, t, h.dtype)
        o = attention(layer.attn, layer_norm(layer.attn_norm, h), allowed_keys(config, kind, mask), cos, sin,
                      config.num_attention_heads, mode)
        h = ProportionalAdd.apply(h, o)
        h = ProportionalAdd.apply(h, gated_mlp(layer.mlp, layer_norm(layer.mlp_norm, h)))
    h = layer_norm(base.final_norm, h)
    m = mask.unsqueeze(-1).to(h.dtype)
    pooled = Identity.apply(ProportionalSum.apply(Identity.apply(h, lambda x: x * m), 1), lambda x: x / m.sum(1))
    head = model.head
    x = layer_norm(head.norm, Identity.apply(linear(head.dense, pooled), head.act))
    return word, linear(model.classifier, x)


def oracle(model, ids, mask, mode, target=None):
    """(token relevance [B, T], logits) by the rules above; target None: the argmax."""
    with torch.enable_grad():
        word, logits = oracle_logits(model, ids, mask, mode)
        if target is None:
            target = logits.argmax(-1)
        rows = torch.arange(len(ids))
        r_out = torch.zeros_like(logits)
        r_out[rows, target] = logits.detach()[rows, target]
        (grad,) = torch.autograd.grad(logits, word, r_out)
    return grad.sum(-1), logits.detach()


# ------------------------------------------------------------------------------------ the model and its batch


def make_model(seed: int = 0):
    """The tiny ModernBERT of tests/test_gated_units.py, one global and one sliding-window layer, with weights that
    make O(1) activations and non-uniform attention (HF's initialisation, std 0.02, leaves attention nearly uniform
    and the LayerNorm γ at 1): γ = 1 + 0.3 N(0, 1), Linear weights N(0, 1/in), embeddings N(0, 1), the classifier's
    bias (its only one) N(0, 0.09)."""
    config = transformers.ModernBertConfig(
        vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=64, global_attn_every_n_layers=2, local_attention=4, pad_token_id=0, bos_token_id=1,
        eos_token_id=1, cls_token_id=1, sep_token_id=1, num_labels=3, classifier_pooling="mean",
        attn_implementation="sdpa")
    torch.manual_seed(seed)
    model = transformers.ModernBertForSequenceClassification(config).double()
    g = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    for name, value in state.items():
        if not value.is_floating_point() or "inv_freq" in name:
            continue
        randn = torch.randn(value.shape, generator=g, dtype=torch.float64)
        if "norm" in name:
            state[name] = 1 + 0.3 * randn
        elif name.endswith("bias"):
            state[name] = 0.3 * randn
        elif "embeddings" in name:
            state[name] = randn
        else:
            state[name] = randn / value.shape[1] ** 0.5
    model.load_state_dict(state)
    return model.eval()


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 64, (len(LENGTHS), max(LENGTHS)), generator=g)
    mask = (torch.arange(max(LENGTHS))[None, :] < torch.tensor(LENGTHS)[:, None]).long()
    return ids.masked_fill(mask == 0, 0), mask


# ------------------------------------------------------------------------------------ the tests


def test_the_model_has_a_global_and_a_sliding_layer_and_a_query_without_keys():
    model = make_model()
    _, mask = batch()
    assert model.config.layer_types == ["full_attention", "sliding_attention"]
    assert isinstance(model.model.layers[0].attn_norm, nn.Identity)
    allowed = allowed_keys(model.config, "sliding_attention", mask)
    assert not allowed[1, 0, 8].any() and allowed[0, 0, 4].sum() == 5


@pytest.mark.parametrize("composite", COMPOSITES)
def test_oracle_forward_reproduces_the_models(composite):
    model = make_model()
    ids, mask = batch()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(oracle(model, ids, mask, composite)[1], expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("target", [None, torch.tensor([2, 0, 1])], ids=["argmax", "given"])
@pytest.mark.parametrize("composite", COMPOSITES)
def test_relevance_matches_the_oracle(composite, target):
    """Measured at commit time: cp_lrp agrees to 3e-15 relative, attnlrp to 6e-10. The attnlrp gap is lrptext
    holding the relevance of the rotate_half branch in float32 (the model casts q and k with q.float() before
    rotate_half): rounding that branch's relevance to float32 in the oracle brings it to 2e-15."""
    model = make_model()
    ids, mask = batch()
    relevance, logits = oracle(model, ids, mask, composite, target)
    e = lrptext.explain(model, {"input_ids": ids, "attention_mask": mask}, composite=composite, target=target)
    torch.testing.assert_close(e.prediction, logits, rtol=0, atol=1e-10)
    assert torch.equal(e.target, logits.argmax(-1) if target is None else target)
    assert torch.all(e.relevance[mask == 0] == 0)
    assert torch.all(e.relevance[mask == 1] != 0)
    assert_relevance(e.relevance, relevance)


def test_the_composites_differ():
    """The comparison can fail: AttnLRP and CP-LRP differ by far more than the tolerance."""
    model = make_model()
    ids, mask = batch()
    attn, cp = oracle(model, ids, mask, "attnlrp")[0], oracle(model, ids, mask, "cp_lrp")[0]
    assert ((attn - cp).abs().max() / attn.abs().max()).item() > 1e-3
