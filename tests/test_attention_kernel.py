"""The attention relevance kernel (C++ on the CPU, torch fallback, torch on CUDA) against an oracle written here
from the equations, term by term in float64 numpy, for one head at a time:

O_ic = Σ_k A_ik V_kc with A = softmax over the allowed keys of S = scale Q Kᵀ.
- A·V by the uniform rule: the term A_ik V_kc carries A_ik V_kc R_O,ic / O_ic, half to A_ik and half to V_kc.
- the softmax by gradient × input with the relevance per unit of output R_A,ik / A_ik:
  R_S,ij = Σ_k S_ij (∂A_ik/∂S_ij) R_A,ik / A_ik with ∂A_ik/∂S_ij = A_ik (δ_jk − A_ij).
- Q Kᵀ by the uniform rule: the term scale Q_ie K_je of S_ij carries scale Q_ie K_je R_S,ij / S_ij, half to each.
- CP-LRP: A a constant; V takes every term A_ik V_kc R_O,ic / O_ic, Q and K none.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lrptext.kernels as K
from tolerances import assert_matches


def oracle_head(q, k, v, r, allowed, scale, rule):
    """R_Q, R_K, R_V and R_S of one head, float64, loops over the terms."""
    nq, nk, nv = q.shape[0], k.shape[0], v.shape[1]
    s = scale * q @ k.T
    a = np.zeros((nq, nk))
    for i in range(nq):
        keys = [j for j in range(nk) if allowed[i, j]]
        if keys:
            e = np.exp(s[i, keys] - s[i, keys].max())
            a[i, keys] = e / e.sum()
    o = a @ v
    r_a, r_v = np.zeros((nq, nk)), np.zeros((nk, nv))
    share = 1.0 if rule == "cp_lrp" else 0.5
    for i in range(nq):
        for c in range(nv):
            if r[i, c] == 0:
                continue
            for kk in range(nk):
                term = a[i, kk] * v[kk, c] * r[i, c] / o[i, c]
                r_a[i, kk] += 0.5 * term
                r_v[kk, c] += share * term
    if rule == "cp_lrp":
        return np.zeros_like(q), np.zeros_like(k), r_v, None
    r_s = np.zeros((nq, nk))
    for i in range(nq):
        for j in range(nk):
            if a[i, j] == 0:
                continue
            r_s[i, j] = sum(s[i, j] * a[i, kk] * ((j == kk) - a[i, j]) * r_a[i, kk] / a[i, kk]
                            for kk in range(nk) if a[i, kk] != 0)
    r_q, r_k = np.zeros_like(q), np.zeros_like(k)
    for i in range(nq):
        for j in range(nk):
            if r_s[i, j] == 0:
                continue
            for e in range(q.shape[1]):
                term = scale * q[i, e] * k[j, e] * r_s[i, j] / s[i, j]
                r_q[i, e] += 0.5 * term
                r_k[j, e] += 0.5 * term
    return r_q, r_k, r_v, r_s


def oracle(q, k, v, r, mask, scale, causal, rule):
    q, k, v, r = (a.detach().cpu().double().numpy() for a in (q, k, v, r))
    b, h, nq, _ = q.shape
    nk = k.shape[2]
    allowed = np.ones((b, h, nq, nk), dtype=bool)
    if mask is not None:
        allowed &= np.broadcast_to(mask.cpu().numpy(), allowed.shape)
    if causal:
        allowed &= np.tril(np.ones((nq, nk), dtype=bool))
    out = [np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)]
    kept = np.zeros((b,))
    for bi in range(b):
        for hi in range(h):
            r_q, r_k, r_v, r_s = oracle_head(q[bi, hi], k[bi, hi], v[bi, hi], r[bi, hi], allowed[bi, hi], scale, rule)
            for o, part in zip(out, (r_q, r_k, r_v)):
                o[bi, hi] = part
            if r_s is not None:
                kept[bi] += r_s.sum()
    return out, kept


def rand(shape, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(device)


MASKS = {
    "none": None,
    "keys": (2, 1, 1, 6),        # padding: per sample, per key
    "full": (2, 3, 5, 6),        # per head and query
    "queries": (1, 1, 5, 6),     # one pattern for the batch
    "2-D": (5, 6),
}


@pytest.mark.parametrize("rule", ["attnlrp", "cp_lrp"])
@pytest.mark.parametrize("mask_shape", list(MASKS))
@pytest.mark.parametrize("causal", [False, True])
def test_attention_against_the_oracle(rule, mask_shape, causal, dtype, backend, device):
    q, k = rand((2, 3, 5, 4), dtype, device, 1), rand((2, 3, 6, 4), dtype, device, 2)
    v, r = rand((2, 3, 6, 3), dtype, device, 3), rand((2, 3, 5, 3), dtype, device, 4)
    shape = MASKS[mask_shape]
    mask = None
    if shape is not None:
        mask = torch.rand(shape, generator=torch.Generator().manual_seed(5)) > 0.3
        mask[..., 0] = True  # every query keeps a key
        mask = mask.to(device)
    scale = 0.7
    r_q, r_k, r_v = K.attention_relevance(q, k, v, r, mask=mask, scale=scale, causal=causal, rule=rule,
                                          backend=backend)
    (e_q, e_k, e_v), _ = oracle(q, k, v, r, mask, scale, causal, rule)
    for actual, expected in ((r_q, e_q), (r_k, e_k), (r_v, e_v)):
        assert actual.shape == expected.shape and actual.device == q.device and actual.dtype == dtype
        if np.abs(expected).max() == 0:
            assert (actual == 0).all()
        else:
            assert_matches(actual, expected, dtype)


def test_conservation_and_the_softmax_share(backend):
    """A·V conserves: Σ R_V + Σ R_A = Σ R_O; Q Kᵀ conserves what the softmax passes on (Σ R_S), and R_A − R_S is
    the share the softmax keeps back. CP-LRP: all of R_O at V."""
    q, k = rand((2, 2, 7, 4), torch.float64, "cpu", 6), rand((2, 2, 7, 4), torch.float64, "cpu", 7)
    v, r = rand((2, 2, 7, 4), torch.float64, "cpu", 8), rand((2, 2, 7, 4), torch.float64, "cpu", 9)
    r_q, r_k, r_v = K.attention_relevance(q, k, v, r, backend=backend)
    (_, _, e_v), kept = oracle(q, k, v, r, None, 0.5, False, "attnlrp")
    r_a_total = r.sum((1, 2, 3)) - r_v.sum((1, 2, 3))  # what reached A
    torch.testing.assert_close((r_q + r_k).sum((1, 2, 3)), torch.from_numpy(kept), rtol=1e-10, atol=1e-12)
    assert float((r_a_total - torch.from_numpy(kept)).abs().max()) > 1e-3  # the softmax keeps a share back
    _, _, c_v = K.attention_relevance(q, k, v, r, rule="cp_lrp", backend=backend)
    torch.testing.assert_close(c_v.sum((1, 2, 3)), r.sum((1, 2, 3)), rtol=1e-10, atol=1e-12)


def test_masked_keys_and_a_query_without_keys_get_zero(backend):
    q, k, v, r = (rand((1, 2, 4, 3), torch.float32, "cpu", s) for s in (10, 11, 12, 13))
    mask = torch.tensor([True, False, True, False]).reshape(1, 1, 1, 4).expand(1, 1, 4, 4).clone()
    mask[0, 0, 2] = False  # query 2 may attend to nothing
    r_q, r_k, r_v = K.attention_relevance(q, k, v, r, mask=mask, backend=backend)
    assert (r_k[:, :, 1] == 0).all() and (r_k[:, :, 3] == 0).all() and (r_v[:, :, [1, 3]] == 0).all()
    assert (r_q[:, :, 2] == 0).all()
    assert torch.isfinite(r_q).all() and torch.isfinite(r_k).all() and torch.isfinite(r_v).all()


def test_long_rows_in_float32_stay_accurate(backend):
    """512 keys with scores spread wide: the kernel's own exponential against the float64 oracle (positive values,
    so that O = A V is far from 0 and R_O / O well conditioned)."""
    q, k = 3 * rand((1, 1, 512, 8), torch.float32, "cpu", 14), 3 * rand((1, 1, 512, 8), torch.float32, "cpu", 15)
    v = rand((1, 1, 512, 8), torch.float32, "cpu", 16).abs() + 0.5
    r = rand((1, 1, 512, 8), torch.float32, "cpu", 17)
    out = K.attention_relevance(q, k, v, r, backend=backend, rule="cp_lrp")
    s = (q.double() @ k.double().transpose(-2, -1)) / math.sqrt(8)
    a = torch.softmax(s, -1)
    expected = v.double() * (a.transpose(-2, -1) @ (r.double() / (a @ v.double())))
    assert_matches(out[2], expected.numpy(), torch.float32)


def test_numpy_arrays_come_back_as_numpy(backend):
    q, k, v, r = (np.random.default_rng(s).normal(size=(1, 2, 3, 4)) for s in range(4))
    out = K.attention_relevance(q, k, v, r, mask=np.array([True, True, False]), backend=backend)
    assert all(isinstance(o, np.ndarray) and o.shape == (1, 2, 3, 4) for o in out)
    (e_q, e_k, e_v), _ = oracle(*(torch.from_numpy(a) for a in (q, k, v, r)), torch.tensor([True, True, False]),
                                0.5, False, "attnlrp")
    for actual, expected in zip(out, (e_q, e_k, e_v)):
        assert_matches(actual, expected, torch.float64)


def test_bad_input_is_refused_with_the_argument_named(backend):
    q = torch.randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match="'key' must have shape"):
        K.attention_relevance(q, torch.randn(1, 2, 3, 5), q, q, backend=backend)
    with pytest.raises(ValueError, match="'relevance' must have shape"):
        K.attention_relevance(q, q, q, torch.randn(1, 2, 4, 4), backend=backend)
    with pytest.raises(ValueError, match="'query' must be 4-D"):
        K.attention_relevance(q[0], q, q, q, backend=backend)
    with pytest.raises(ValueError, match="'mask' must be boolean"):
        K.attention_relevance(q, q, q, q, mask=torch.zeros(3), backend=backend)
    with pytest.raises(ValueError, match="does not broadcast"):
        K.attention_relevance(q, q, q, q, mask=torch.ones(2, 2, dtype=torch.bool), backend=backend)
    with pytest.raises(ValueError, match="'rule' must be"):
        K.attention_relevance(q, q, q, q, rule="lrp", backend=backend)
    with pytest.raises(ValueError, match="'scale' must be"):
        K.attention_relevance(q, q, q, q, scale=0.0, backend=backend)
    with pytest.raises(ValueError, match="float32 or float64"):
        K.attention_relevance(q.half(), q.half(), q.half(), q.half(), backend=backend)
    with pytest.raises(ValueError, match="'relevance' holds NaN or infinity"):
        K.attention_relevance(q, q, q, torch.full_like(q, float("nan")), backend=backend)


@pytest.mark.parametrize("rule", ["attnlrp", "cp_lrp"])
def test_long_sequences_in_blocks_of_queries(rule):
    """600 keys: the C++ kernel runs a head in blocks of query rows, summing Aᵀ G and Hᵀ Q over them; the torch
    implementation (checked against the oracle above) holds the whole head. Masked keys and causal order too."""
    q, k = rand((1, 2, 70, 8), torch.float64, "cpu", 18), rand((1, 2, 600, 8), torch.float64, "cpu", 19)
    v, r = rand((1, 2, 600, 4), torch.float64, "cpu", 20), rand((1, 2, 70, 4), torch.float64, "cpu", 21)
    mask = torch.rand((1, 1, 1, 600), generator=torch.Generator().manual_seed(22)) > 0.2
    mask[..., 0] = True
    for causal in (False, True):
        ours = K.attention_relevance(q, k, v, r, mask=mask, causal=causal, rule=rule, backend="cpp")
        torchs = K.attention_relevance(q, k, v, r, mask=mask, causal=causal, rule=rule, backend="torch")
        for a, b in zip(ours, torchs):
            if b.abs().max() == 0:
                assert (a == 0).all()
            else:
                assert_matches(a, b.numpy(), torch.float64)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[batch, tokens, heads * dim] -> a [batch, heads, tokens, dim] view, as models split heads (not contiguous)."""
    b, t, width = x.shape
    return x.view(b, t, heads, width // heads).transpose(1, 2)


@pytest.mark.parametrize("rule", ["attnlrp", "cp_lrp"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [4, 12, 24])
def test_strided_heads_are_read_and_written_in_place(rule, dtype, dim):
    """Q, K and V as head views of one fused projection ([batch, tokens, 3 * heads * dim], so rows lie 3 * width
    apart), R_O as a head view of its own [batch, tokens, width]: the C++ CPU kernel reads them without a copy, and
    each output comes back laid out like its operand (so merging the heads again is a free view), against the
    oracle; numpy views likewise. 40 keys with a padded sample, so blocks and masks meet the strides; head sizes
    below, across and at multiples of the kernel's 8 x 8 blocks for transposing K and V (16 rows at a time)."""
    heads = 3
    qkv = rand((2, 40, 3 * heads * dim), dtype, "cpu", 40)
    q, k, v = (split_heads(part, heads) for part in qkv.split(heads * dim, dim=-1))
    r = split_heads(rand((2, 40, heads * dim), dtype, "cpu", 41), heads)
    mask = torch.ones(2, 1, 1, 40, dtype=torch.bool)
    mask[1, ..., 30:] = False
    assert not q.is_contiguous() and not r.is_contiguous()
    out = K.attention_relevance(q, k, v, r, mask=mask, rule=rule, backend="cpp")
    (e_q, e_k, e_v), _ = oracle(q, k, v, r, mask, dim ** -0.5, False, rule)  # the default scale
    for actual, operand, expected in zip(out, (q, k, v), (e_q, e_k, e_v)):
        assert actual.stride() == (40 * heads * dim, dim, heads * dim, 1)  # [batch, tokens, heads, dim] memory
        assert actual.transpose(1, 2).reshape(2, 40, heads * dim)._base is actual  # merging is a view
        if np.abs(expected).max() == 0:
            assert (actual == 0).all()
        else:
            assert_matches(actual, expected, dtype)
    numpy_out = K.attention_relevance(*(a.numpy() for a in (q, k, v, r)), mask=mask.numpy(), rule=rule,
                                      backend="cpp")
    for a, b in zip(numpy_out, out):
        np.testing.assert_array_equal(a, b.numpy())


def test_strided_heads_the_core_refuses():
    """At the C++ boundary: a last axis that is not contiguous, and an output that reaches an element twice."""
    from lrptext._native import require_core
    core = require_core()
    q = torch.randn(1, 2, 3, 4)
    outs = [torch.empty(1, 2, 3, 4) for _ in range(3)]
    with pytest.raises(ValueError, match="'key' must have a contiguous last axis"):
        core.attention_relevance(q, q.transpose(2, 3).contiguous().transpose(2, 3), q, q, None, *outs,
                                 rule="attnlrp", scale=0.5)
    overlapping = torch.empty(1, 1, 3, 4).expand(1, 2, 3, 4)
    with pytest.raises(ValueError, match="'out_key' has overlapping strides"):
        core.attention_relevance(q, q, q, q, None, outs[0], overlapping, outs[2], rule="attnlrp", scale=0.5)
    nan = torch.zeros(1, 3, 2, 4)
    nan[0, 2, 1, 3] = float("nan")
    with pytest.raises(ValueError, match="'relevance' holds NaN or infinity \\(first at flat index 23\\)"):
        core.attention_relevance(q, q, q, nan.transpose(1, 2), None, *outs, rule="attnlrp", scale=0.5)



def forward_statistics(q, k, v, mask, scale, causal):
    """O and log Σ exp(scale Q Kᵀ) over each query's allowed keys (−inf where none), in the operands' dtype."""
    s = scale * (q @ k.transpose(-2, -1))
    allowed = torch.ones_like(s, dtype=torch.bool)
    if causal:
        allowed &= torch.ones(s.shape[-2:], dtype=torch.bool).tril()
    if mask is not None:
        allowed &= mask
    s = s.masked_fill(~allowed, float("-inf"))
    return torch.nan_to_num(torch.softmax(s, -1)) @ v, torch.logsumexp(s, -1)


@pytest.mark.parametrize("rule", ["attnlrp", "cp_lrp"])
@pytest.mark.parametrize("mask_shape", ["none", "keys", "full"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_forward_pass_statistics_spare_the_recomputation(rule, mask_shape, causal, dtype, backend):
    """Given the forward pass's O and log-sum-exp (the C++ CPU kernel then reads A = exp(scale S − lse) and O
    instead of computing them), the same relevance as the oracle; a query with no allowed key still gets 0, with
    its log-sum-exp −inf (as computed here) or 0 (as torch's CPU flash attention returns it)."""
    q, k = rand((2, 3, 5, 4), dtype, "cpu", 31), rand((2, 3, 6, 4), dtype, "cpu", 32)
    v, r = rand((2, 3, 6, 3), dtype, "cpu", 33), rand((2, 3, 5, 3), dtype, "cpu", 34)
    mask = None
    if MASKS[mask_shape] is not None:
        mask = torch.rand(MASKS[mask_shape], generator=torch.Generator().manual_seed(35)) > 0.3
        mask[..., 0] = True
        if mask_shape == "full":
            mask[1, 2, 3] = False  # a query with no key
    o, lse = forward_statistics(q, k, v, mask, 0.7, causal)
    passed = r.clone()
    if mask_shape == "full":
        passed[1, 2, 3] = 0  # the oracle's: a query with no key passes nothing (it divides by O = 0)
    (e_q, e_k, e_v), _ = oracle(q, k, v, passed, mask, 0.7, causal, rule)
    for given_lse in (lse, lse.nan_to_num(neginf=0.0)):
        out = K.attention_relevance(q, k, v, r, mask=mask, scale=0.7, causal=causal, rule=rule, output=o,
                                    logsumexp=given_lse, backend=backend)
        for actual, expected in zip(out, (e_q, e_k, e_v)):
            if np.abs(expected).max() == 0:
                assert (actual == 0).all()
            else:
                assert_matches(actual, expected, dtype)
        if mask_shape == "full":
            assert (out[0][1, 2, 3] == 0).all()


def test_the_forward_pass_statistics_of_torchs_cpu_attention():
    """What the engine passes: torch's CPU flash attention's own O and log-sum-exp (lse laid out [B, T, H] in
    memory), at 300 keys in float32 (blocks of query rows), a padded sample, and R_O proportional to that O as the
    layer after attention hands it back; within float32's tolerance of the float64 relevance."""
    q, k, v = (rand((2, 4, 300, 16), torch.float32, "cpu", s) for s in (36, 37, 38))
    mask = torch.ones(2, 1, 1, 300, dtype=torch.bool)
    mask[1, ..., 250:] = False
    additive = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
    o, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=additive)
    r = o * rand((2, 4, 300, 16), torch.float32, "cpu", 39)
    for rule in ("attnlrp", "cp_lrp"):
        given = K.attention_relevance(q, k, v, r, mask=mask, rule=rule, output=o, logsumexp=lse, backend="cpp")
        expected = K.attention_relevance(*(a.double() for a in (q, k, v, r)), mask=mask, rule=rule, backend="torch")
        for a, b in zip(given, expected):
            if b.abs().max() == 0:
                assert (a == 0).all()
            else:
                assert_matches(a, b.numpy(), torch.float32)


def test_the_forward_pass_statistics_are_checked(backend):
    q = torch.randn(1, 2, 3, 4)
    lse = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match="'output' and 'logsumexp' .* go together"):
        K.attention_relevance(q, q, q, q, output=q, backend=backend)
    with pytest.raises(ValueError, match="'logsumexp' must have shape \\(1, 2, 3\\)"):
        K.attention_relevance(q, q, q, q, output=q, logsumexp=torch.zeros(1, 2, 4), backend=backend)
    with pytest.raises(ValueError, match="'output' must have shape"):
        K.attention_relevance(q, q, q, q, output=q[:, :1], logsumexp=lse, backend=backend)
    with pytest.raises(ValueError, match="'logsumexp' holds NaN"):
        K.attention_relevance(q, q, q, q, output=q, logsumexp=torch.full_like(lse, float("nan")), backend=backend)


def test_expanded_and_single_row_heads():
    """Operands whose rows overlap (a query expanded along its tokens) or whose only row has any stride: the
    wrappers copy what BLAS cannot read, the core refuses it by name, and the result matches the oracle."""
    from lrptext._native import require_core
    q = rand((1, 2, 1, 4), torch.float64, "cpu", 50).expand(1, 2, 6, 4)  # rows 0 elements apart
    k, v = rand((1, 2, 6, 4), torch.float64, "cpu", 51), rand((1, 2, 6, 3), torch.float64, "cpu", 52)
    r = rand((1, 2, 6, 3), torch.float64, "cpu", 53)
    out = K.attention_relevance(q, k, v, r, backend="cpp")
    for actual, expected in zip(out, oracle(q, k, v, r, None, 0.5, False, "attnlrp")[0]):
        assert_matches(actual, expected, torch.float64)
    outs = [torch.empty(1, 2, 6, 4, dtype=torch.float64), torch.empty(1, 2, 6, 4, dtype=torch.float64),
            torch.empty(1, 2, 6, 3, dtype=torch.float64)]
    with pytest.raises(ValueError, match="'query' has rows 0 elements apart"):
        require_core().attention_relevance(q, k, v, r, None, *outs, rule="attnlrp", scale=0.5)
    one = torch.as_strided(rand((8,), torch.float64, "cpu", 54), (1, 2, 1, 4), (8, 4, 1, 1))  # row stride 1
    out = K.attention_relevance(one, k, v, r[:, :, :1], backend="cpp")
    for actual, expected in zip(out, oracle(one, k, v, r[:, :, :1], None, 0.5, False, "attnlrp")[0]):
        assert_matches(actual, expected, torch.float64)


def _forward(q, k, v, mask, scale, causal):
    """O and the log-sum-exp per query as torch's CPU flash attention returns them (what the engine hands over)."""
    from torch.ops import aten

    additive = None if mask is None else torch.zeros(mask.shape, dtype=q.dtype).masked_fill_(~mask, float("-inf"))
    o, lse = aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, attn_mask=additive,
                                                              scale=scale)[:2]
    return o, lse


@pytest.mark.parametrize("saved", [False, True], ids=["computed", "saved"])
@pytest.mark.parametrize("rule", ["attnlrp", "cp_lrp"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_form_is_the_relevance_divided_by_each_operand(rule, causal, dtype, saved):
    """gradient_form (the C++ CPU kernel, as the engine calls it between dense layers): relevance given as G with
    R_O = O ⊙ G and returned as R_Q / Q, R_K / K, R_V / V. Times the operands it is the oracle's relevance for
    R_O = O ⊙ G; with a padded sample, a query that may attend to no key, and 40 queries (blocks of rows)."""
    from lrptext._native import require_core

    core = require_core()
    q, k, v, g = (rand((2, 3, 40, 4), dtype, "cpu", s) for s in (50, 51, 52, 53))
    mask = torch.ones(2, 3, 40, 40, dtype=torch.bool)
    mask[1, ..., 30:] = False  # padding
    mask[0, 1, 7] = False  # a query without keys
    scale = 0.6
    o, lse = _forward(q, k, v, mask, scale, causal)
    o = torch.nan_to_num(o)  # (the query without keys)
    outs = [torch.empty_like(t) for t in (q, k, v)]
    extra = {"output": o, "logsumexp": lse} if saved else {}
    core.attention_relevance(q, k, v, g, mask, *outs, rule=rule, scale=scale, causal=causal, gradient_form=True,
                             **extra)
    (e_q, e_k, e_v), _ = oracle(q, k, v, o * g, mask, scale, causal, rule)
    for gradient, operand, expected in zip(outs, (q, k, v), (e_q, e_k, e_v)):
        assert torch.isfinite(gradient).all()
        if np.abs(expected).max() == 0:
            assert (gradient == 0).all()
        else:
            assert_matches(gradient * operand, expected, dtype)
    assert (outs[0][0, 1, 7] == 0).all()  # nothing reaches a query that attends to nothing


@pytest.mark.parametrize("rule", ["attnlrp", "cp_lrp"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [4, 20])
def test_quotient_epsilon_writes_the_projections_epsilon_quotients(rule, dtype, dim):
    """With quotient_epsilon ε the gradient form's outputs are R_X / st(X), st(x) = x + ε sign(x) with sign(0) = +1
    (what the projection that computed X divides by): the oracle's relevance divided by st of the operand, and
    bit for bit what the core's divide_stabilized makes of the plain gradient form. Operands with exact zeros and
    rows laid out as a transformer's heads are (strided views of [batch, tokens, heads, dim]); head size 20 runs
    the quotients' vector loop and its tail, and the 8 x 8 transposes."""
    from lrptext._native import require_core
    from lrptext.kernels import native

    core = require_core()
    q, k, v = (rand((2, 40, 3, dim), dtype, "cpu", s).transpose(1, 2) for s in (60, 61, 62))
    for x in (q, k, v):
        x[0, 1, :3] = 0.0
    g = rand((2, 3, 40, dim), dtype, "cpu", 63)
    mask = torch.ones(2, 3, 40, 40, dtype=torch.bool)
    mask[1, ..., 30:] = False
    eps = 0.25  # large enough to move every quotient visibly
    o, lse = _forward(q, k, v, mask, 0.6, False)
    plain = [torch.empty_like(t) for t in (q, k, v)]
    core.attention_relevance(q, k, v, g, mask, *plain, rule=rule, scale=0.6, gradient_form=True)
    quotients = [torch.empty_like(t) for t in (q, k, v)]
    core.attention_relevance(q, k, v, g, mask, *quotients, rule=rule, scale=0.6, gradient_form=True,
                             quotient_epsilon=eps)
    (e_q, e_k, e_v), _ = oracle(q, k, v, o * g, mask, 0.6, False, rule)
    for quotient, gradient, operand, expected in zip(quotients, plain, (q, k, v), (e_q, e_k, e_v)):
        st = operand + torch.where(operand >= 0, eps, -eps).to(dtype)
        assert_matches(quotient, torch.as_tensor(expected) / st, dtype)
        divided = torch.empty(gradient.shape, dtype=dtype)
        native.divide_stabilized(gradient.contiguous(), operand.contiguous(), divided, eps,
                                 factor=operand.contiguous())
        assert torch.equal(quotient, divided)
    with pytest.raises(ValueError, match="'quotient_epsilon' belongs to gradient_form"):
        core.attention_relevance(q, k, v, g, mask, *quotients, rule=rule, scale=0.6, quotient_epsilon=eps)
    with pytest.raises(ValueError, match="'quotient_epsilon' must be a finite number >= 0"):
        core.attention_relevance(q, k, v, g, mask, *quotients, rule=rule, scale=0.6, gradient_form=True,
                                 quotient_epsilon=-1.0)


def test_outputs_may_be_column_blocks_of_one_array_but_not_overlap():
    """Q, K and V computed as one product over stacked weights are column blocks of its output, [batch, tokens,
    3 x heads x dim]; the kernel writes R_Q, R_K and R_V into blocks of one array laid out alike (one product
    then takes all three). Blocks that share a column, or an output over an input, are refused by name."""
    from lrptext._native import require_core

    core = require_core()
    stacked = rand((2, 40, 3 * 12), torch.float64, "cpu", 64)
    q, k, v = (stacked[..., i * 12:(i + 1) * 12].view(2, 40, 3, 4).transpose(1, 2) for i in range(3))
    g = rand((2, 3, 40, 4), torch.float64, "cpu", 65)
    mask = torch.ones(2, 3, 40, 40, dtype=torch.bool)
    separate = [torch.empty_like(t) for t in (q, k, v)]
    core.attention_relevance(q, k, v, g, mask, *separate, rule="attnlrp", scale=0.5, gradient_form=True)
    out = torch.full(stacked.shape, float("nan"), dtype=torch.float64)
    blocks = [out.as_strided(t.shape, t.stride(), t.storage_offset()) for t in (q, k, v)]
    core.attention_relevance(q, k, v, g, mask, *blocks, rule="attnlrp", scale=0.5, gradient_form=True)
    for block, want in zip(blocks, separate):
        assert torch.equal(block, want)
    assert not out.isnan().any()  # every element written once: the three blocks tile the array
    shifted = out.as_strided(q.shape, q.stride(), 10)  # columns 10..21: two of them are R_Q's too
    with pytest.raises(ValueError, match="'out_query' shares memory with 'out_key'"):
        core.attention_relevance(q, k, v, g, mask, blocks[0], shifted, blocks[2], rule="attnlrp", scale=0.5,
                                 gradient_form=True)
    with pytest.raises(ValueError, match="'out_key' shares memory with 'query'"):
        core.attention_relevance(q, k, v, g, mask, separate[0], q, separate[2], rule="attnlrp", scale=0.5,
                                 gradient_form=True)
    room = torch.empty(stacked.numel() + 36, dtype=torch.float64)
    wrapping = room.as_strided(q.shape, q.stride(), 30)  # columns 30..41 of 36-wide rows: 0..5 of the next row
    with pytest.raises(ValueError, match="'out_query' shares memory with 'out_key'"):
        core.attention_relevance(q, k, v, g, mask, room.as_strided(q.shape, q.stride(), 0), wrapping, separate[2],
                                 rule="attnlrp", scale=0.5, gradient_form=True)


def test_gradient_form_is_refused_on_cuda_and_for_the_softmax():
    from lrptext._native import require_core

    core = require_core()
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="'gradient_form' belongs to the layer_norm rule"):
        core.row_relevance(x, x, x, torch.empty(2, 3), rule="softmax", gradient_form=True)
