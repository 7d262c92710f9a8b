"""Transformer encoders (AttnLRP, CP-LRP) against an independent float64 oracle.

The oracle re-implements the forward pass of BERT, DistilBERT, RoBERTa and ELECTRA sequence classifiers with the
models' own weights, every operation a torch.autograd.Function whose backward *is* its LRP rule: the "gradient"
autograd carries is the relevance itself, so torch.autograd.grad(logits, word_embeddings, one-hot × logits) gives
the relevance of every word-embedding row. Routing operations (view, transpose, indexing, selecting [CLS]) keep
their ordinary backward, which moves relevance without changing it; a tensor read by two branches (the residual
stream) receives the sum of both relevances, as LRP wants. Written from the rules of the AttnLRP (Achtibat et al.
2024) and CP-LRP (Ali et al. 2022) papers, not from lrptext's code:

    st(z) = z + 1e-6 sign(z), sign(0) = +1
    Linear z = W x + b:       R_x = x ⊙ Wᵀ (R_z / st(z))                       (ε-rule, the bias keeps its share)
    GELU, ReLU, tanh:          R_in = R_out                                      (identity)
    LayerNorm y = γ z/σ + β:   R_z = R_y ⊙ (1 − β / st(y)), R_x = x ⊙ (s − mean s), s = R_z / st(z), z = x − mean x
    a + b, Σ_i x_i:            R_a = a ⊙ R / (a + b)                             (proportional split, exact)
    O = A V (AttnLRP):         R_A = ½ A ⊙ (G Vᵀ), R_V = ½ V ⊙ (Aᵀ G), G = R_O / O
    A = softmax(S):            R_S = S ⊙ (R_A − A Σ_k R_A), 0 at masked keys
    S = scale Q Kᵀ:            R_Q = ½ Q ⊙ (H K), R_K = ½ K ⊙ (Hᵀ Q), H = scale R_S / S
    O = A V (CP-LRP):          R_V = V ⊙ (Aᵀ G), nothing to Q and K
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

transformers = pytest.importorskip("transformers")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.autograd import Function  # noqa: E402

import lrptext  # noqa: E402
from lrptext import Explainer, UnsupportedLayerError  # noqa: E402
from oracle_rules import (  # noqa: E402
    EPS,
    RTOL,
    Identity,
    ProportionalAdd,
    ProportionalSum,
    assert_relevance,
    ratio,
    st,
)
from tolerances import assert_same_sums  # noqa: E402

COMPOSITES = ("attnlrp", "cp_lrp")
KINDS = ("bert", "distilbert", "roberta", "electra")
LENGTHS = (9, 6, 4)  # a padded batch: sequences of these lengths padded to the first
AMPLIFY = 1000.0
WORST: dict[tuple[str, str], float] = {}  # largest relative deviation seen per (model, composite), for the report


# ------------------------------------------------------------------------------------ the rules as Functions


class EpsLinear(Function):
    epsilon = EPS  # the composite's ε (its `epsilon=` parameter); oracle() sets it for one call

    @staticmethod
    def forward(ctx, x, weight, bias):
        z = F.linear(x, weight, bias)
        ctx.save_for_backward(x, weight, z)
        return z

    @staticmethod
    def backward(ctx, r):
        x, weight, z = ctx.saved_tensors
        stabilised = z + EpsLinear.epsilon * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
        return x * ((r / stabilised) @ weight), None, None


class LayerNormRule(Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, eps):
        y = F.layer_norm(x, x.shape[-1:], gamma, beta, eps)
        z = x - x.mean(-1, keepdim=True)
        ctx.save_for_backward(x, z, y, beta)
        return y

    @staticmethod
    def backward(ctx, r):
        x, z, y, beta = ctx.saved_tensors
        r_z = r * (1 - beta / st(y))
        s = r_z / st(z)
        return x * (s - s.mean(-1, keepdim=True)), None, None, None


class Attention(Function):
    """O = softmax(scale Q Kᵀ, masked keys at −inf) V for q, k, v [B, heads, T, d] and keys [B, T] (bool)."""

    @staticmethod
    def forward(ctx, q, k, v, keys, scale, mode, kept):
        s = scale * q @ k.transpose(-1, -2)
        a = torch.softmax(s.masked_fill(~keys[:, None, None, :], float("-inf")), dim=-1)
        o = a @ v
        ctx.save_for_backward(q, k, v, keys, s, a, o)
        ctx.scale, ctx.mode, ctx.kept = scale, mode, kept
        return o

    @staticmethod
    def backward(ctx, r_o):
        q, k, v, keys, s, a, o = ctx.saved_tensors
        g = ratio(r_o, o)
        if ctx.mode == "cp_lrp":
            return None, None, v * (a.transpose(-1, -2) @ g), None, None, None, None
        r_a = 0.5 * a * (g @ v.transpose(-1, -2))
        r_v = 0.5 * v * (a.transpose(-1, -2) @ g)
        r_s = s * (r_a - a * r_a.sum(-1, keepdim=True))
        r_s = r_s.masked_fill(~keys[:, None, None, :], 0.0)
        if ctx.kept is not None:  # the share the softmax keeps back (a bias-like term)
            ctx.kept.append((r_a - r_s).sum(dim=(1, 2, 3)))
        h = ctx.scale * ratio(r_s, s)
        r_q = 0.5 * q * (h @ k)
        r_k = 0.5 * k * (h.transpose(-1, -2) @ q)
        return r_q, r_k, r_v, None, None, None, None


# ------------------------------------------------------------------------------------ the oracle's forward


def linear(m: nn.Linear, x):
    return EpsLinear.apply(x, m.weight, m.bias)


def layer_norm(m: nn.LayerNorm, x):
    return LayerNormRule.apply(x, m.weight, m.bias, m.eps)


def self_attention(x, q_lin, k_lin, v_lin, heads, keys, mode, kept):
    b, t, hidden = x.shape
    d = hidden // heads

    def split(y):
        return y.view(b, t, heads, d).transpose(1, 2)

    o = Attention.apply(split(linear(q_lin, x)), split(linear(k_lin, x)), split(linear(v_lin, x)), keys,
                        d ** -0.5, mode, kept)
    return o.transpose(1, 2).reshape(b, t, hidden)


def bert_like_encoder(encoder, h, keys, mode, kept, heads):
    for layer in encoder.layer:
        att = layer.attention
        o = self_attention(h, att.self.query, att.self.key, att.self.value, heads, keys, mode, kept)
        h = layer_norm(att.output.LayerNorm, ProportionalAdd.apply(linear(att.output.dense, o), h))
        f = Identity.apply(linear(layer.intermediate.dense, h), layer.intermediate.intermediate_act_fn)
        h = layer_norm(layer.output.LayerNorm, ProportionalAdd.apply(linear(layer.output.dense, f), h))
    return h


def bert_like_embeddings(emb, word, position_ids, token_type_ids):
    """word + token type, then + position (the order of BertEmbeddings.forward), then LayerNorm."""
    b, t, _ = word.shape
    tt = emb.token_type_embeddings.weight[token_type_ids].detach().expand(b, t, -1)
    pos = emb.position_embeddings.weight[position_ids].detach().expand(b, t, -1)
    return layer_norm(emb.LayerNorm, ProportionalAdd.apply(ProportionalAdd.apply(word, tt), pos))


def oracle_hidden(model, ids, mask, token_type_ids, mode, kept):
    """(the word-embedding rows (leaf), the last hidden states [B, T, H]) of model's encoder."""
    keys = mask.bool()
    b, t = ids.shape
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(ids)
    if isinstance(model, transformers.DistilBertModel):
        word = model.embeddings.word_embeddings.weight[ids].detach().requires_grad_(True)
        pos = model.embeddings.position_embeddings.weight[:t].detach().expand(b, t, -1)
        h = layer_norm(model.embeddings.LayerNorm, ProportionalAdd.apply(word, pos))
        heads = model.config.n_heads
        for layer in model.transformer.layer:
            att = layer.attention
            o = self_attention(h, att.q_lin, att.k_lin, att.v_lin, heads, keys, mode, kept)
            h = layer_norm(layer.sa_layer_norm, ProportionalAdd.apply(linear(att.out_lin, o), h))
            f = Identity.apply(linear(layer.ffn.lin1, h), layer.ffn.activation)
            h = layer_norm(layer.output_layer_norm, ProportionalAdd.apply(linear(layer.ffn.lin2, f), h))
        return word, h
    emb = model.embeddings
    word = emb.word_embeddings.weight[ids].detach().requires_grad_(True)
    if isinstance(model, transformers.RobertaModel):
        pad = model.config.pad_token_id
        real = ids.ne(pad).long()
        position_ids = torch.cumsum(real, dim=1) * real + pad
    else:
        position_ids = torch.arange(t)[None, :]
    h = bert_like_embeddings(emb, word, position_ids, token_type_ids)
    if isinstance(model, transformers.ElectraModel) and hasattr(model, "embeddings_project"):
        h = linear(model.embeddings_project, h)
    return word, bert_like_encoder(model.encoder, h, keys, mode, kept, model.config.num_attention_heads)


def oracle_logits(model, ids, mask, token_type_ids, mode, kept):
    if isinstance(model, transformers.BertForSequenceClassification):
        word, h = oracle_hidden(model.bert, ids, mask, token_type_ids, mode, kept)
        pooled = Identity.apply(linear(model.bert.pooler.dense, h[:, 0]), torch.tanh)
        return word, linear(model.classifier, pooled)
    if isinstance(model, transformers.DistilBertForSequenceClassification):
        word, h = oracle_hidden(model.distilbert, ids, mask, token_type_ids, mode, kept)
        pooled = Identity.apply(linear(model.pre_classifier, h[:, 0]), torch.relu)
        return word, linear(model.classifier, pooled)
    base = model.roberta if isinstance(model, transformers.RobertaForSequenceClassification) else model.electra
    word, h = oracle_hidden(base, ids, mask, token_type_ids, mode, kept)
    head = model.classifier
    act = torch.tanh if isinstance(model, transformers.RobertaForSequenceClassification) else head.activation
    x = Identity.apply(linear(head.dense, h[:, 0]), act)
    return word, linear(head.out_proj, x)


def oracle(model, ids, mask, mode, token_type_ids=None, target=None, epsilon=EPS):
    """(token relevance [B, T], logits, the softmaxes' kept share per sample) by the rules above; epsilon: the
    Linear layers' ε (the stabilisers of LayerNorm stay 1e-6)."""
    kept: list[torch.Tensor] = []
    EpsLinear.epsilon = epsilon
    try:
        with torch.enable_grad():
            word, logits = oracle_logits(model, ids, mask, token_type_ids, mode, kept)
            if target is None:
                target = logits.argmax(-1)
            r_out = torch.zeros_like(logits)
            r_out[torch.arange(len(ids)), target] = logits.detach()[torch.arange(len(ids)), target]
            (grad,) = torch.autograd.grad(logits, word, r_out)
    finally:
        EpsLinear.epsilon = EPS
    kept_share = torch.stack(kept).sum(0) if kept else torch.zeros(len(ids), dtype=logits.dtype)
    return grad.sum(-1), logits.detach(), kept_share


# ------------------------------------------------------------------------------------ tiny models and batches


def config(kind: str, **extra):
    common = dict(vocab_size=100, num_labels=3, max_position_embeddings=64, **extra)
    if kind == "bert":
        return transformers.BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=32, **common)
    if kind == "distilbert":
        return transformers.DistilBertConfig(dim=16, n_layers=2, n_heads=2, hidden_dim=32, **common)
    if kind == "roberta":
        return transformers.RobertaConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=32, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                                          **common)
    # ELECTRA with embedding_size < hidden_size: the embeddings_project Linear between embeddings and encoder
    return transformers.ElectraConfig(embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, **common)


CLASSES = {
    "bert": "BertForSequenceClassification",
    "distilbert": "DistilBertForSequenceClassification",
    "roberta": "RobertaForSequenceClassification",
    "electra": "ElectraForSequenceClassification",
}


def randomize(model: nn.Module, seed: int, zero_offsets: bool = False) -> nn.Module:
    """Weights that make O(1) activations and non-uniform attention; random biases, LayerNorm γ and β (HF's
    initialisation sets biases and β to 0, γ to 1, which would leave those rules untested). zero_offsets: every
    bias, every LayerNorm β, the position and token-type embeddings set to 0 (in the state dict), and the
    activations amplified for the conservation test: LayerNorm γ and word embeddings × AMPLIFY, query and key
    weights ÷ AMPLIFY (the attention scores stay as they were), the output layer × 100. The LayerNorm rule's 1e-6
    stabilisers then leak ~1e-6 / AMPLIFY of the relevance instead of ~1e-5."""
    g = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    for name, value in state.items():
        if not value.is_floating_point():
            continue
        leaf = name.rsplit(".", 1)[-1]
        norm = "LayerNorm" in name or "layer_norm" in name
        if norm and leaf == "weight":
            new = 1 + 0.3 * torch.randn(value.shape, generator=g, dtype=torch.float64)
        elif leaf == "bias":
            new = 0.3 * torch.randn(value.shape, generator=g, dtype=torch.float64)
        elif value.dim() == 2 and "embeddings" in name:
            new = torch.randn(value.shape, generator=g, dtype=torch.float64)
        else:  # Linear weights [out, in]
            new = torch.randn(value.shape, generator=g, dtype=torch.float64) / value.shape[1] ** 0.5
        if zero_offsets:
            if leaf == "bias" or "position_embeddings" in name or "token_type_embeddings" in name:
                new = torch.zeros_like(new)
            elif (norm and leaf == "weight") or "word_embeddings" in name:
                new = AMPLIFY * new
            elif any(f".{q}.weight" in f".{name}" for q in ("query", "key", "q_lin", "k_lin")):
                new = new / AMPLIFY
            elif any(f".{q}.weight" in f".{name}" for q in ("classifier", "out_proj")):
                new = 100 * new
        state[name] = new.to(value.dtype)
    model.load_state_dict(state)
    return model


def make_model(kind: str, seed: int = 0, zero_offsets: bool = False, **config_extra) -> nn.Module:
    torch.manual_seed(seed)
    model = getattr(transformers, CLASSES[kind])(config(kind, **config_extra)).double()
    return randomize(model, seed, zero_offsets).eval()


def batch(kind: str, lengths=LENGTHS, seed: int = 1):
    """input_ids and attention_mask of right-padded sequences; real tokens never the pad id."""
    g = torch.Generator().manual_seed(seed)
    pad = 1 if kind == "roberta" else 0
    t = max(lengths)
    ids = torch.randint(3, 100, (len(lengths), t), generator=g)
    mask = torch.zeros(len(lengths), t, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    ids = ids.masked_fill(mask == 0, pad)
    return ids, mask


def model_logits(model, ids, mask, token_type_ids=None):
    inputs = {"input_ids": ids, "attention_mask": mask}
    if token_type_ids is not None:
        inputs["token_type_ids"] = token_type_ids
    with torch.no_grad():
        out = model(**inputs)
    return out if isinstance(out, torch.Tensor) else out.logits


def relative_deviation(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


# ------------------------------------------------------------------------------------ 1. against the oracle

_CACHE: dict[tuple, object] = {}


def cached(key: tuple, build):
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def setup(kind: str):
    """(model, input_ids, attention_mask) of the tiny `kind` model (SDPA attention) and its padded batch."""
    return cached(("setup", kind), lambda: (make_model(kind, seed=KINDS.index(kind)), *batch(kind)))


def explainer(kind: str, composite: str) -> Explainer:
    return cached(("explainer", kind, composite), lambda: Explainer(setup(kind)[0], composite=composite))


def explained(kind: str, composite: str):
    _, ids, mask = setup(kind)
    return cached(("explained", kind, composite),
                  lambda: explainer(kind, composite).explain({"input_ids": ids, "attention_mask": mask}))


def expected(kind: str, composite: str):
    model, ids, mask = setup(kind)
    return cached(("oracle", kind, composite), lambda: oracle(model, ids, mask, composite))


@pytest.mark.parametrize("kind", KINDS)
def test_oracle_forward_reproduces_the_models(kind):
    model, ids, mask = setup(kind)
    torch.testing.assert_close(expected(kind, "attnlrp")[1], model_logits(model, ids, mask), rtol=0, atol=1e-10)
    torch.testing.assert_close(expected(kind, "cp_lrp")[1], model_logits(model, ids, mask), rtol=0, atol=1e-10)


@pytest.mark.parametrize("composite", COMPOSITES)
@pytest.mark.parametrize("kind", KINDS)
def test_relevance_matches_the_oracle(kind, composite):
    e = explained(kind, composite)
    relevance, logits, _ = expected(kind, composite)
    torch.testing.assert_close(e.prediction, logits, rtol=0, atol=1e-10)
    assert torch.equal(e.target, logits.argmax(-1))
    torch.testing.assert_close(e.initial, logits.gather(1, e.target[:, None])[:, 0], rtol=1e-12, atol=0)
    torch.testing.assert_close(e.delta, e.relevance.sum(-1) - e.initial, rtol=1e-9, atol=1e-12)
    WORST[kind, composite] = relative_deviation(e.relevance, relevance)
    assert_relevance(e.relevance, relevance)


@pytest.mark.parametrize("product", ["core", "torch"])
@pytest.mark.parametrize("composite", COMPOSITES)
@pytest.mark.parametrize("kind", KINDS)
def test_either_blas_for_the_dense_products_matches_the_oracle(kind, product, composite, monkeypatch):
    """The dense epsilon products of an explanation run in the core's BLAS or in torch's, by the CPU
    (lrptext.build_info()["dense_product"]); both give the oracle's relevance. Here every product, however small,
    takes the one chosen, and the test sees that it did. Torch's products hand relevance on in gradient form
    (lrptext.kernels.factored: through residual sums, LayerNorm, reshapes and attention), which each
    architecture's graph routes its own way, and attention's kernel writes the Q, K and V projections' quotients
    (lrptext/layers/projections.py); padding still gets exactly 0, and the per-layer sums (relevance multiplied
    out at every node, nothing folded) are the core products' ones."""
    from lrptext import _native
    from lrptext.kernels import dispatch
    from lrptext.layers import projections

    taken, folded = [], []
    torch_product, fold = dispatch._epsilon_torch_product, projections.fold
    monkeypatch.setattr(_native, "dense_product", product)
    monkeypatch.setattr(dispatch, "_TORCH_PRODUCT_FROM", 0)
    monkeypatch.setattr(dispatch, "_epsilon_torch_product", lambda *a: taken.append(1) or torch_product(*a))
    monkeypatch.setattr(projections, "fold", lambda *a: folded.append(f := fold(*a)) or f)
    model, ids, mask = setup(kind)
    batch = {"input_ids": ids, "attention_mask": mask}
    e = Explainer(model, composite=composite).explain(batch)
    assert (len(taken) > 0) == (product == "torch")
    assert any(f is not None for f in folded) == (product == "torch")
    assert_relevance(e.relevance, expected(kind, composite)[0])
    assert (e.relevance[mask == 0] == 0).all()
    if product == "torch":
        layered = Explainer(model, composite=composite).explain(batch, layers=True)
        assert_relevance(layered.relevance, expected(kind, composite)[0])
        monkeypatch.setattr(_native, "dense_product", "core")
        core = Explainer(model, composite=composite).explain(batch, layers=True)
        assert layered.layer_relevance.keys() == core.layer_relevance.keys()
        for name, sums in core.layer_relevance.items():
            torch.testing.assert_close(layered.layer_relevance[name], sums, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("composite", COMPOSITES)
@pytest.mark.parametrize("kind", KINDS)
def test_projections_folded_into_attention_give_what_their_steps_give(kind, composite, monkeypatch):
    """Where attention's kernel writes the Q, K and V projections' epsilon quotients and their products add into
    the relevance at the shared input (lrptext/layers/projections.py), the explanation is the one the
    projections' own steps give, in float32 on the padded batch: bit for bit under CP-LRP (the value projection's
    product alone, added as its step adds it), to float32's rounding under AttnLRP (the three products are one over
    the stacked weights: the same terms summed in another order)."""
    import copy

    from lrptext import _native
    from lrptext.kernels import dispatch
    from lrptext.layers import projections

    monkeypatch.setattr(_native, "dense_product", "torch")
    monkeypatch.setattr(dispatch, "_TORCH_PRODUCT_FROM", 0)
    model, ids, mask = setup(kind)
    model = copy.deepcopy(model).float()
    batch = {"input_ids": ids, "attention_mask": mask}
    folded, fold = [], projections.fold
    monkeypatch.setattr(projections, "fold", lambda *a: folded.append(f := fold(*a)) or f)
    got = Explainer(model, composite=composite).explain(batch)
    assert folded and all(f is not None for f in folded)
    monkeypatch.setattr(projections, "fold", lambda *a: None)
    want = Explainer(model, composite=composite).explain(batch)
    assert got.relevance.dtype == torch.float32
    if composite != "cp_lrp":
        assert all(f.stacked is not None for f in folded)
    assert_same_sums(got, want, same_order=composite == "cp_lrp")


@pytest.mark.cuda
@pytest.mark.parametrize("composite", COMPOSITES)
@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_relevance_on_cuda_matches_the_oracle(kind, composite, cuda_device):
    """The model and its padded batch on the GPU: the CUDA kernels (attention, LayerNorm, dense) against the
    float64 oracle computed on the CPU."""
    import copy

    model, ids, mask = setup(kind)
    e = Explainer(copy.deepcopy(model).to(cuda_device), composite=composite).explain(
        {"input_ids": ids.to(cuda_device), "attention_mask": mask.to(cuda_device)})
    relevance, logits, _ = expected(kind, composite)
    assert e.relevance.is_cuda
    torch.testing.assert_close(e.prediction.cpu(), logits, rtol=0, atol=1e-10)
    assert_relevance(e.relevance.cpu(), relevance)


def test_relevance_with_token_type_ids_and_a_given_target():
    model = make_model("bert", seed=7)
    ids, mask = batch("bert", seed=3)
    token_type_ids = (torch.arange(ids.shape[1]) >= 3).long().expand_as(ids) * mask
    target = torch.tensor([2, 0, 1])
    e = lrptext.explain(model, {"input_ids": ids, "attention_mask": mask, "token_type_ids": token_type_ids},
                        composite="attnlrp", target=target)
    relevance, logits, _ = oracle(model, ids, mask, "attnlrp", token_type_ids=token_type_ids, target=target)
    torch.testing.assert_close(logits, model_logits(model, ids, mask, token_type_ids), rtol=0, atol=1e-10)
    assert not torch.equal(target, logits.argmax(-1))  # not the default target
    assert torch.equal(e.target, target)
    WORST["bert token types", "attnlrp"] = relative_deviation(e.relevance, relevance)
    assert_relevance(e.relevance, relevance)


@pytest.mark.parametrize("kind", KINDS)
def test_the_composites_and_the_oracle_can_tell_rules_apart(kind):
    """The comparison above can fail: CP-LRP and AttnLRP differ by far more than the tolerance, and so does an
    oracle with one rule changed (the LayerNorm's β share passed on to x, or the additions' split stabilised)."""
    model, ids, mask = setup(kind)
    attn, cp = expected(kind, "attnlrp")[0], expected(kind, "cp_lrp")[0]
    assert relative_deviation(cp, attn) > 1e-3
    assert relative_deviation(explained(kind, "cp_lrp").relevance, explained(kind, "attnlrp").relevance) > 1e-3

    def beta_passes(ctx, r):  # wrong: β's share forwarded to x
        x, z, y, beta = ctx.saved_tensors
        s = r / st(z)
        return x * (s - s.mean(-1, keepdim=True)), None, None, None

    def stabilised(ctx, r):  # the split with the 1e-6 stabiliser: off by ~1e-6, 100x the tolerance
        a, b, y = ctx.saved_tensors
        return a * r / st(y), b * r / st(y)

    for function, wrong_rule, bound in ((LayerNormRule, beta_passes, 1e-3), (ProportionalAdd, stabilised, 100 * RTOL)):
        right_rule = function.backward
        function.backward = staticmethod(wrong_rule)
        try:
            wrong = oracle(model, ids, mask, "attnlrp")[0]
        finally:
            function.backward = staticmethod(right_rule)
        assert relative_deviation(wrong, attn) > bound, function.__name__


# ------------------------------------------------------------------------------------ 2. conservation


@pytest.mark.parametrize("kind", KINDS)
def test_conservation_without_biases(kind):
    """Biases, LayerNorm β, position and token-type embeddings at 0: CP-LRP conserves the target logit, AttnLRP
    the logit less what the softmaxes keep back (Σ over layers of Σ (R(A) − R(S)), from the oracle).

    Up to the stabilisers, which leak by themselves: with the default ε = 1e-6 the oracle (and lrptext, which
    agrees with it to 1e-13) misses the logit by 1e-5 to 3e-5 on these models, through the ε-rule of the Linear
    layers (with AttnLRP mostly the query and key projections, whose outputs are O(1) for the softmax to stay
    soft) and the 1e-6 stabilisers of the LayerNorm rule. So this test takes the composite's ε = 1e-12 (its
    `epsilon=` parameter) and amplified activations (see randomize), and first checks that the oracle then
    conserves to 1e-7 itself."""
    model = make_model(kind, seed=11, zero_offsets=True)
    ids, mask = batch(kind)
    for composite in COMPOSITES:
        e = lrptext.explain(model, {"input_ids": ids, "attention_mask": mask}, composite=composite, epsilon=1e-12)
        relevance, logits, kept = oracle(model, ids, mask, composite, epsilon=1e-12)
        initial = logits.gather(1, e.target[:, None])[:, 0]
        torch.testing.assert_close(e.initial, initial, rtol=1e-12, atol=0)
        oracle_gap = ((relevance.sum(-1) + kept - initial) / initial).abs().max().item()
        assert oracle_gap < 1e-7, f"{composite}: the oracle itself misses by {oracle_gap:.2e}"
        gap = ((e.relevance.sum(-1) + kept - initial) / initial).abs().max().item()
        WORST[f"{kind} conservation gap", composite] = gap
        assert gap < 1e-6, f"{composite}: Σ relevance{' + kept' if composite == 'attnlrp' else ''} misses the " \
                           f"logit by {gap:.2e} relative"
        if composite == "attnlrp":  # the kept share is real: without it AttnLRP does not conserve
            assert ((e.relevance.sum(-1) - initial) / initial).abs().max().item() > 1e-3
        else:
            assert torch.equal(kept, torch.zeros_like(kept))


def test_conservation_fails_with_biases():
    e = explained("bert", "cp_lrp")
    assert (e.delta.abs() / e.initial.abs()).max().item() > 1e-3


# ------------------------------------------------------------------------------------ 3. padding


@pytest.mark.parametrize("composite", COMPOSITES)
@pytest.mark.parametrize("kind", KINDS)
def test_padding_gets_nothing_and_changes_nothing(kind, composite):
    model, ids, mask = setup(kind)
    padded = explained(kind, composite)
    assert torch.all(padded.relevance[mask == 0] == 0)
    assert torch.all(padded.relevance[mask == 1] != 0)
    for i, n in enumerate(LENGTHS):
        alone = explainer(kind, composite).explain({"input_ids": ids[i:i + 1, :n], "attention_mask": mask[i:i + 1, :n]})
        torch.testing.assert_close(padded.relevance[i, :n], alone.relevance[0], rtol=1e-10,
                                   atol=1e-12 * alone.relevance.abs().max().item())
        torch.testing.assert_close(padded.prediction[i], alone.prediction[0], rtol=1e-10, atol=1e-12)
        assert padded.target[i] == alone.target[0]


# ------------------------------------------------------------------------------------ 4. the model untouched


def hooks(model: nn.Module):
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
             "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_state_dict_hooks",
             "_load_state_dict_pre_hooks")
    return {(qualified, attr): dict(getattr(m, attr, {})) for qualified, m in model.named_modules() for attr in names}


def snapshot(model: nn.Module):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {q: m.training for q, m in model.named_modules()},
            {n: (p.requires_grad, p.grad) for n, p in model.named_parameters()},
            hooks(model))


def assert_unchanged(model: nn.Module, before) -> None:
    state, training, params, hook_dicts = before
    after = model.state_dict()
    assert list(after) == list(state)
    for k in state:
        assert after[k].dtype == state[k].dtype and torch.equal(after[k], state[k]), k
    assert {q: m.training for q, m in model.named_modules()} == training
    assert {n: (p.requires_grad, p.grad) for n, p in model.named_parameters()} == params
    assert hooks(model) == hook_dicts


@pytest.mark.parametrize("kind,composite", [("bert", "attnlrp"), ("distilbert", "cp_lrp")])
def test_the_model_is_left_as_it_was(kind, composite):
    model = make_model(kind, seed=5, hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5, dropout=0.5,
                       attention_dropout=0.5, seq_classif_dropout=0.5)
    calls = []
    handle = model.classifier.register_forward_hook(lambda *args: calls.append(1))  # a user's hook stays
    ids, mask = batch(kind)
    inputs = {"input_ids": ids, "attention_mask": mask}
    before = snapshot(model)
    evaluated = lrptext.explain(model, inputs, composite=composite)
    assert_unchanged(model, before)

    model.train()
    before = snapshot(model)
    trained = lrptext.explain(model, inputs, composite=composite)
    assert_unchanged(model, before)
    assert model.training and all(m.training for m in model.modules())
    # eval semantics although the model is in train mode (dropout rates of 0.5 would show)
    torch.testing.assert_close(trained.relevance, evaluated.relevance, rtol=1e-12, atol=0)
    torch.testing.assert_close(trained.prediction, evaluated.prediction, rtol=1e-12, atol=0)
    with torch.no_grad():  # the check can fail: in train mode the model's own logits differ
        assert not torch.allclose(model(**inputs).logits, evaluated.prediction)
    relevance, _, _ = oracle(model.eval(), ids, mask, composite)
    assert_relevance(trained.relevance, relevance)
    handle.remove()


# ------------------------------------------------------------------------------------ 5. the support table


@pytest.mark.parametrize("kind", KINDS)
def test_support_table_lists_attention_and_layer_norms(kind):
    model = setup(kind)[0]
    layers = model.config.num_hidden_layers if kind != "distilbert" else model.config.n_layers
    norms = {q for q, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
    linears = {q for q, m in model.named_modules() if isinstance(m, nn.Linear)}
    for composite, rule, table in (("attnlrp", "AttnLRP()", lrptext.support_table(model, composite="attnlrp")),
                                   ("cp_lrp", "CPLRP()", explainer(kind, "cp_lrp").support_table())):
        rows = table.rows
        attention = [r for r in rows if r.kind == "attention"]
        assert len(attention) == layers, attention
        for r in attention:
            assert r.rule == rule, r
            assert r.name.endswith("attention.self") or r.name.endswith("attention"), r
        norm_rows = [r for r in rows if r.kind == "layer_norm"]
        assert {r.name for r in norm_rows} == norms, norm_rows
        for r in norm_rows:
            assert "epsilon" in r.rule.lower(), r  # the ε-rule on the centring
        dense = [r for r in rows if r.kind == "dense"]
        assert {r.name for r in dense} == linears, dense
        assert all(r.rule == "Epsilon(epsilon=1e-06)" for r in dense), dense


def test_a_composite_without_an_attention_rule_is_refused():
    model, ids, mask = setup("bert")
    for call in (lambda: lrptext.explain(model, {"input_ids": ids, "attention_mask": mask}, composite="epsilon"),
                 lambda: Explainer(model, composite="epsilon_plus")):
        with pytest.raises((ValueError, UnsupportedLayerError)) as info:
            call()
        message = str(info.value)
        assert "attnlrp" in message and "cp_lrp" in message, message
        assert "attention" in message, message


def test_explainer_explains_a_batch_encoding():
    _, ids, mask = setup("bert")
    encoding = transformers.BatchEncoding({"input_ids": ids, "attention_mask": mask})
    for _ in range(2):  # the second call reuses what the first built
        assert_relevance(explainer("bert", "attnlrp").explain(encoding).relevance, expected("bert", "attnlrp")[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
def test_a_mask_of_another_dtype_gives_the_same_explanation(dtype):
    """Some pipelines hand the attention mask over as floats (or booleans): 0s and 1s of any dtype explain as the
    tokenizer's integers do (a float32 mask of a float64 model once failed with torch's "Tensor dtype mismatch");
    a soft mask, which no rule covers, is refused by name."""
    _, ids, mask = setup("bert")
    got = explainer("bert", "attnlrp").explain({"input_ids": ids, "attention_mask": mask.to(dtype)})
    assert_relevance(got.relevance, expected("bert", "attnlrp")[0])
    assert (got.relevance[mask == 0] == 0).all()
    if dtype != torch.bool:
        with pytest.raises(ValueError, match="input 'attention_mask' must hold 0s and 1s, got 0.5"):
            explainer("bert", "attnlrp").explain({"input_ids": ids, "attention_mask": mask.to(dtype) * 0.5})


def test_eager_attention():
    """attn_implementation="eager": attention as matmul, softmax, matmul in the graph, with the mask added to the
    scores (HF adds the dtype's minimum, not −inf). Explained like SDPA attention, it must match the same oracle.
    (At first lrptext refused it with UnsupportedLayerError "no rule for aten.matmul"; it now explains it.)"""
    model = make_model("bert", seed=0, attn_implementation="eager")
    assert model.config._attn_implementation == "eager"
    ids, mask = batch("bert")
    for composite in COMPOSITES:
        e = lrptext.explain(model, {"input_ids": ids, "attention_mask": mask}, composite=composite)
        relevance, logits, _ = oracle(model, ids, mask, composite)
        torch.testing.assert_close(logits, model_logits(model, ids, mask), rtol=0, atol=1e-10)
        WORST["bert eager", composite] = relative_deviation(e.relevance, relevance)
        assert_relevance(e.relevance, relevance)
        assert torch.all(e.relevance[mask == 0] == 0)


# ------------------------------------------------------------------------------------ 6. user modules


class MeanPooled(nn.Module):
    def __init__(self, bert: nn.Module, classes: int, normalize: bool = False):
        super().__init__()
        self.bert, self.normalize = bert, normalize
        self.head = nn.Linear(bert.config.hidden_size, classes)

    def forward(self, input_ids, attention_mask=None):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1)
        if self.normalize:
            pooled = F.normalize(pooled, dim=-1)
        return self.head(pooled)


def mean_pooled(normalize: bool = False) -> MeanPooled:
    torch.manual_seed(3)
    bert = transformers.BertModel(config("bert"), add_pooling_layer=False).double()
    model = MeanPooled(bert, 3, normalize).double()
    return randomize(model, 3).eval()


def oracle_mean_pooled(model, ids, mask, mode):
    """h · mask and / count: constants, relevance passes; the sum over tokens by the proportional split (exact, as
    the additions); L2 normalisation: the norm a constant (as the LayerNorm's σ), relevance passes."""
    kept: list[torch.Tensor] = []
    with torch.enable_grad():
        word, h = oracle_hidden(model.bert, ids, mask, None, mode, kept)
        m = mask.unsqueeze(-1).to(h.dtype)
        masked = Identity.apply(h, lambda x: x * m)
        pooled = Identity.apply(ProportionalSum.apply(masked, 1), lambda x: x / m.sum(1))
        if model.normalize:
            pooled = Identity.apply(pooled, lambda x: F.normalize(x, dim=-1))
        logits = linear(model.head, pooled)
        target = logits.argmax(-1)
        r_out = torch.zeros_like(logits)
        r_out[torch.arange(len(ids)), target] = logits.detach()[torch.arange(len(ids)), target]
        (grad,) = torch.autograd.grad(logits, word, r_out)
    return grad.sum(-1), logits.detach()


@pytest.mark.parametrize("composite", COMPOSITES)
def test_mean_pooling_wrapper_matches_the_oracle(composite):
    """Fails as of commit ec7ba58 by ~5e-6 relative (tolerance 1e-8): lrptext splits the token sum (aten.sum, kind
    "reduce") with Norm(stabilizer=1e-6), R_i = x_i R / st(Σ x), while attnlrp/cp_lrp split every addition exactly
    (Norm(0.0)); with a stabilised sum in the oracle the two agree to 5e-15."""
    model = mean_pooled()
    ids, mask = batch("bert")
    relevance, logits = oracle_mean_pooled(model, ids, mask, composite)
    torch.testing.assert_close(logits, model_logits(model, ids, mask), rtol=0, atol=1e-10)
    e = lrptext.explain(model, {"input_ids": ids, "attention_mask": mask}, composite=composite)
    torch.testing.assert_close(e.prediction, logits, rtol=0, atol=1e-10)
    assert torch.all(e.relevance[mask == 0] == 0)
    WORST["bert + mean pooling", composite] = relative_deviation(e.relevance, relevance)
    assert_relevance(e.relevance, relevance)


def test_l2_normalised_pooling_wrapper_matches_the_oracle(composite="attnlrp"):
    """F.normalize of the pooled vector: the norm held constant, relevance passes through the division. (At
    first lrptext refused it with UnsupportedLayerError "no rule for aten.linalg_vector_norm"; it now explains it.)"""
    model = mean_pooled(normalize=True)
    ids, mask = batch("bert")
    relevance, logits = oracle_mean_pooled(model, ids, mask, composite)
    torch.testing.assert_close(logits, model_logits(model, ids, mask), rtol=0, atol=1e-10)
    e = lrptext.explain(model, {"input_ids": ids, "attention_mask": mask}, composite=composite)
    torch.testing.assert_close(e.prediction, logits, rtol=0, atol=1e-10)
    assert torch.all(e.relevance[mask == 0] == 0)
    WORST["bert + mean pooling + L2", composite] = relative_deviation(e.relevance, relevance)
    assert_relevance(e.relevance, relevance)


def test_report_worst_deviations():
    """Not a check: prints the largest relative deviations from the oracle (run with -s to see them)."""
    for key, value in sorted(WORST.items()):
        print(f"{key[0]:>28} {key[1]:>8}: {value:.2e}")


# ------------------------------------------------------------------------------------ 7. per-layer and per-head


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_each_heads_share_with_layers(attention):
    """layers=True: every attention's relevance per head sums to its total, and a head whose values the output
    projection never reads (its columns zeroed) gets exactly nothing while the other head gets its share."""
    model = make_model("bert", seed=0, attn_implementation=attention)
    ids, mask = batch("bert")
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.output.dense.weight[:, head_dim:2 * head_dim] = 0
    e = lrptext.explain(model, {"input_ids": ids, "attention_mask": mask}, composite="attnlrp", layers=True)
    names = [f"bert.encoder.layer.{i}.attention.self" for i in range(2)]
    assert sorted(e.head_relevance) == names
    for name, heads in e.head_relevance.items():
        assert heads.shape == (len(ids), model.config.num_attention_heads)
        # the attention's total is recorded under the module that calls it: "<module path>:<node>"
        totals = [v for k, v in e.layer_relevance.items() if k.startswith(f"{name}:")]
        assert any(torch.allclose(heads.sum(1), t, rtol=1e-10, atol=1e-12) for t in totals)
        if attention == "sdpa":  # named after its node: scaled_dot_product_attention, ..._1, ...
            (key,) = [k for k in e.layer_relevance if k.startswith(f"{name}:scaled_dot_product_attention")]
            torch.testing.assert_close(heads.sum(1), e.layer_relevance[key])
    first = e.head_relevance[names[0]]
    assert torch.all(first[:, 1] == 0) and torch.all(first[:, 0].abs() > 0)
    assert torch.all(e.head_relevance[names[1]].abs() > 0)


def test_each_layers_totals_are_the_samples_own():
    """layers=True on a padded batch: every total is one number per sample, and each sample's totals are those
    it gets alone; the position embeddings, which the samples share, are listed only for a batch of one."""
    model, ids, mask = setup("bert")
    explainer = Explainer(model, composite="attnlrp")
    together = explainer.explain({"input_ids": ids, "attention_mask": mask}, layers=True).layer_relevance
    assert all(total.shape == (len(ids),) for total in together.values())
    for i, n in enumerate(LENGTHS):
        alone = explainer.explain({"input_ids": ids[i:i + 1, :n], "attention_mask": mask[i:i + 1, :n]},
                                  layers=True).layer_relevance
        shared = sorted(set(alone) - set(together))
        assert shared and all("position" in name for name in shared), shared
        for name, total in together.items():
            torch.testing.assert_close(total[i:i + 1], alone[name], rtol=1e-9, atol=1e-12)


def test_the_composites_epsilon_reaches_layer_norm():
    model, _, _ = setup("bert")
    table = str(lrptext.support_table(model, composite="attnlrp", epsilon=1e-3))
    norms = [line for line in table.splitlines() if "layer_norm" in line]
    assert norms and all("Epsilon(epsilon=0.001)" in line for line in norms)


@pytest.mark.parametrize("classes", [2, 3])
def test_a_scikit_learn_head_on_a_sentence_encoder(classes):
    """SetFit's shape: mean-pooled, L2-normalised embeddings into a fitted LogisticRegression. The torch model's
    logits are scikit-learn's decision function ((-f, f) for two classes), and its relevance matches the oracle of
    the same network."""
    from sklearn.linear_model import LogisticRegression

    from lrptext.integrations.transformers import SentenceClassifier

    model = mean_pooled(normalize=True)
    ids, mask = batch("bert", lengths=(6, 4, 5, 6, 3, 6, 5, 4), seed=7)
    with torch.no_grad():
        h = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        features = F.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
    labels = np.resize(np.array(["ham", "spam", "eggs"][:classes]), len(ids))
    head = LogisticRegression().fit(features, labels)
    classifier = SentenceClassifier.from_sklearn(model.bert, head, normalize=True).eval()
    assert classifier.labels == list(head.classes_)
    decision = torch.from_numpy(np.atleast_2d(head.decision_function(features)).reshape(len(ids), -1))
    logits = model_logits(classifier, ids, mask)
    torch.testing.assert_close(logits, torch.cat([-decision, decision], 1) if classes == 2 else decision,
                               rtol=1e-10, atol=1e-10)
    with torch.no_grad():  # the same network with the head as a module of MeanPooled, for the oracle
        model.head = classifier.head[0]
    relevance, oracle_logits = oracle_mean_pooled(model, ids, mask, "attnlrp")
    torch.testing.assert_close(oracle_logits, logits, rtol=0, atol=1e-10)
    e = lrptext.explain(classifier, {"input_ids": ids, "attention_mask": mask}, composite="attnlrp")
    assert_relevance(e.relevance, relevance)
    with pytest.raises(ValueError, match="fitted on 5 features"):
        SentenceClassifier.from_sklearn(model.bert, LogisticRegression().fit(features[:, :5], labels))
