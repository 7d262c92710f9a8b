"""The LayerNorm and softmax relevance kernels (C++ CPU and CUDA, torch fallback) against an oracle written here
from the equations, element by element in float64:

- LayerNorm (AttnLRP, σ a constant): R_z,i = R_y,i (1 − β_i / st(y_i)), then the centring z = C x with
  C_ij = δ_ij − 1/N by the ε-rule: R_x,j = Σ_i x_j C_ij R_z,i / st(z_i).
- softmax (AttnLRP, gradient × input with the relevance per unit of output R_s,i / s_i):
  R_x,j = Σ_i x_j (∂s_i/∂x_j) R_s,i / s_i with ∂s_i/∂x_j = s_i (δ_ij − s_j); 0 where s_j = 0.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import lrptext.kernels as K
from tolerances import assert_matches


def stabilize(v: float, eps: float) -> float:
    return v + eps if v >= 0 else v - eps


def layer_norm_oracle(x, y, r, beta, eps):
    x, y, r = (np.asarray(a, dtype=np.float64) for a in (x, y, r))
    out = np.zeros_like(x)
    for index in np.ndindex(x.shape[:-1]):
        row, n = x[index], x.shape[-1]
        z = row - row.mean()
        rz = [r[index][i] * (1 - (beta[i] / stabilize(y[index][i], eps) if beta is not None else 0)) for i in range(n)]
        for j in range(n):
            out[index][j] = sum(row[j] * ((i == j) - 1 / n) * rz[i] / stabilize(z[i], eps) for i in range(n))
    return out


def softmax_oracle(x, s, r):
    x, s, r = (np.asarray(a, dtype=np.float64) for a in (x, s, r))
    out = np.zeros_like(x)
    for index in np.ndindex(x.shape[:-1]):
        n = x.shape[-1]
        for j in range(n):
            if s[index][j] == 0:
                continue
            out[index][j] = sum(x[index][j] * s[index][i] * ((i == j) - s[index][j]) * r[index][i] / s[index][i]
                                for i in range(n) if s[index][i] != 0)
    return out


def rand(shape, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(device)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("contiguous", [True, False])
def test_layer_norm_against_the_oracle(with_bias, contiguous, dtype, backend, device):
    x = rand((2, 3, 7), dtype, device, 1)
    gamma, beta = rand((7,), dtype, device, 2), rand((7,), dtype, device, 3)
    y = torch.nn.functional.layer_norm(x, (7,), gamma, beta if with_bias else None)
    r = rand((2, 3, 7), dtype, device, 4)
    if not contiguous:  # the same values through a strided view
        x, y, r = (a.transpose(0, 1).contiguous().transpose(0, 1) for a in (x, y, r))
        assert not x.is_contiguous()
    bias = beta if with_bias else None
    out = K.layer_norm_relevance(x, y, r, bias=bias, epsilon=1e-6, backend=backend)
    expected = layer_norm_oracle(x.cpu(), y.cpu(), r.cpu(), None if bias is None else bias.cpu().double(), 1e-6)
    assert out.shape == x.shape and out.device == x.device
    assert_matches(out, expected, dtype)
    if not with_bias:  # conservation, exact without the stabiliser
        exact = K.layer_norm_relevance(x, y, r, epsilon=0.0, backend=backend)
        torch.testing.assert_close(exact.sum(-1), r.sum(-1), rtol=1e-3 if dtype == torch.float32 else 1e-9,
                                   atol=1e-4 if dtype == torch.float32 else 1e-12)


def test_layer_norm_over_two_dimensions_and_numpy(backend):
    x = np.random.default_rng(5).normal(size=(3, 2, 4))
    y = torch.nn.functional.layer_norm(torch.from_numpy(x), (2, 4)).numpy()
    r = np.random.default_rng(6).normal(size=(3, 2, 4))
    out = K.layer_norm_relevance(x, y, r, normalized_dims=2, backend=backend)
    assert isinstance(out, np.ndarray)
    expected = layer_norm_oracle(x.reshape(3, 8), y.reshape(3, 8), r.reshape(3, 8), None, 1e-6).reshape(3, 2, 4)
    assert_matches(out, expected, torch.float64)


@pytest.mark.parametrize("dim", [-1, 1])
def test_softmax_against_the_oracle(dim, dtype, backend, device):
    x = rand((2, 5, 6), dtype, device, 7)
    x[0, 1, 2] = float("-inf") if dim == -1 else x[0, 1, 2]  # a masked score
    s = torch.softmax(x, dim)
    r = rand((2, 5, 6), dtype, device, 8) * (s > 0)
    out = K.softmax_relevance(x, s, r, dim=dim, backend=backend)
    moved = [a.cpu().movedim(dim, -1) for a in (x, s, r)]
    expected = torch.from_numpy(softmax_oracle(*moved)).movedim(-1, dim)
    assert torch.isfinite(out).all() and (dim != -1 or out[0, 1, 2] == 0)
    assert_matches(out, expected, dtype)


def test_a_wrong_rule_misses_the_oracle(backend):
    """The check can fail: the softmax rule without the −s ΣR term (plain x·R) is far from the oracle."""
    x, r = rand((3, 5), torch.float64, "cpu", 9), rand((3, 5), torch.float64, "cpu", 10)
    s = torch.softmax(x, -1)
    expected = softmax_oracle(x, s, r)
    assert np.abs((x * r).numpy() - expected).max() > 1e-2
    assert_matches(K.softmax_relevance(x, s, r, backend=backend), expected, torch.float64)


def test_bad_input_is_refused_with_the_argument_named(backend):
    x = torch.randn(2, 4)
    y = torch.nn.functional.layer_norm(x, (4,))
    with pytest.raises(ValueError, match="'output' must have the shape of 'input'"):
        K.layer_norm_relevance(x, y[:, :3], x, backend=backend)
    with pytest.raises(ValueError, match="'bias' must have the normalised shape"):
        K.layer_norm_relevance(x, y, x, bias=torch.ones(3), backend=backend)
    with pytest.raises(ValueError, match="'normalized_dims' must lie in"):
        K.layer_norm_relevance(x, y, x, normalized_dims=3, backend=backend)
    with pytest.raises(ValueError, match="float32 or float64"):
        K.softmax_relevance(x.half(), y.half(), x.half(), backend=backend)
    with pytest.raises(ValueError, match="'relevance' holds NaN or infinity"):
        K.softmax_relevance(x, torch.softmax(x, -1), torch.full_like(x, float("nan")), backend=backend)
    with pytest.raises(ValueError, match="'dim' must lie in"):
        K.softmax_relevance(x, y, x, dim=2, backend=backend)


@pytest.mark.parametrize("with_weight", [True, False])
def test_layer_norm_with_its_weight_and_eps_against_the_oracle(with_weight, dtype, backend, device):
    """Given γ and the LayerNorm's eps, the kernel computes y − β from x; same rule, same oracle."""
    x = rand((2, 3, 7), dtype, device, 11)
    gamma, beta = rand((7,), dtype, device, 12), rand((7,), dtype, device, 13)
    weight = gamma if with_weight else None
    y = torch.nn.functional.layer_norm(x, (7,), weight, beta, eps=1e-5)
    r = rand((2, 3, 7), dtype, device, 14)
    out = K.layer_norm_relevance(x, y, r, bias=beta, weight=weight, variance_epsilon=1e-5, backend=backend)
    expected = layer_norm_oracle(x.cpu(), y.cpu(), r.cpu(), beta.cpu().double(), 1e-6)
    assert_matches(out, expected, dtype)


def test_layer_norm_in_float32_where_y_is_close_to_beta(backend):
    """y = β + a small γ z / σ: 1 − β / st(y) read off float32 y cancels digits; from z it does not. Both against
    the float64 oracle of the same float32 values."""
    x = rand((4, 64), torch.float32, "cpu", 15)
    gamma, beta = torch.full((64,), 0.01), torch.full((64,), 50.0)
    y = torch.nn.functional.layer_norm(x, (64,), gamma, beta)
    r = rand((4, 64), torch.float32, "cpu", 16)
    # the oracle in float64 from the same parameters, y computed in float64
    y64 = torch.nn.functional.layer_norm(x.double(), (64,), gamma.double(), beta.double())
    expected = layer_norm_oracle(x, y64, r, beta.double(), 1e-6)
    precise = K.layer_norm_relevance(x, y, r, bias=beta, weight=gamma, variance_epsilon=1e-5, backend=backend)
    read_off_y = K.layer_norm_relevance(x, y, r, bias=beta, backend=backend)
    assert_matches(precise, expected, torch.float32)
    err = np.abs(read_off_y.numpy() - expected).max() / np.abs(expected).max()
    assert err > 1e-3  # the form this replaces misses the float32 tolerance here


def test_layer_norm_weight_needs_its_eps(backend):
    x = torch.randn(2, 4)
    y = torch.nn.functional.layer_norm(x, (4,))
    with pytest.raises(ValueError, match="'weight' is read with 'variance_epsilon'"):
        K.layer_norm_relevance(x, y, x, weight=torch.ones(4), backend=backend)
    with pytest.raises(ValueError, match="'weight' must have the normalised shape"):
        K.layer_norm_relevance(x, y, x, weight=torch.ones(3), variance_epsilon=1e-5, backend=backend)
    with pytest.raises(ValueError, match="'variance_epsilon' must be"):
        K.layer_norm_relevance(x, y, x, variance_epsilon=-1.0, backend=backend)


@pytest.mark.parametrize("with_affine", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_layer_norm_in_gradient_form(with_affine, dtype):
    """gradient_form (the C++ CPU kernel, as the engine calls it between a residual sum and dense layers): the
    relevance given as g with R_y = y ⊙ g, the result R_x / x. Times x it is the oracle's relevance for y ⊙ g."""
    from lrptext._native import require_core

    core = require_core()
    x, g = rand((6, 9), dtype, "cpu", 16), rand((6, 9), dtype, "cpu", 17)
    gamma, beta = (rand((9,), dtype, "cpu", 18), rand((9,), dtype, "cpu", 19)) if with_affine else (None, None)
    y = torch.nn.functional.layer_norm(x, (9,), gamma, beta, eps=1e-5)
    out = torch.empty_like(x)
    core.row_relevance(x, y, g, out, rule="layer_norm", bias=beta, weight=gamma,
                       variance_epsilon=1e-5 if with_affine else None, epsilon=1e-6, gradient_form=True)
    expected = layer_norm_oracle(x, y, y * g, None if beta is None else beta.double(), 1e-6)
    assert_matches(out * x, expected, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_layer_norm_in_gradient_form_writes_a_dense_summands_quotient(dtype):
    """With quotient_of z, gradient form also writes z ⊙ out / st(z), the epsilon quotient of a dense layer whose
    output z was summed into x: the bits of divide_stabilized over the same out (the dense layer's own pass), and
    out unchanged. Half of z lies within the stabiliser of 0, where st(z) is all but eps sign(z)."""
    from lrptext._native import require_core
    from lrptext.kernels import native

    core = require_core()
    x, g, z = rand((6, 9), dtype, "cpu", 20), rand((6, 9), dtype, "cpu", 21), rand((6, 9), dtype, "cpu", 22)
    z[::2] *= 1e-4
    y = torch.nn.functional.layer_norm(x, (9,), eps=1e-5)
    alone, out, q = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
    core.row_relevance(x, y, g, alone, rule="layer_norm", epsilon=1e-6, gradient_form=True)
    core.row_relevance(x, y, g, out, rule="layer_norm", epsilon=1e-6, gradient_form=True, quotient_of=z,
                       quotient_out=q, quotient_epsilon=1e-4)
    assert torch.equal(out, alone)
    divided = torch.empty_like(x)
    native.divide_stabilized(out, z, divided, 1e-4, factor=z)
    assert torch.equal(q, divided)
    zz = z.double()
    assert_matches(q, zz * out.double() / (zz + 1e-4 * torch.where(zz >= 0, 1.0, -1.0).double()), dtype)


def test_the_dense_summands_quotient_is_refused_with_the_argument_named():
    from lrptext._native import require_core

    core = require_core()
    x = rand((4, 5), torch.float32, "cpu", 23)
    y, g, z, out, q = (torch.ones_like(x) for _ in range(5))
    call = functools.partial(core.row_relevance, x, y, g, out, rule="layer_norm", epsilon=1e-6)
    with pytest.raises(ValueError, match="come together"):
        call(gradient_form=True, quotient_of=z, quotient_out=q)
    with pytest.raises(ValueError, match="belongs to gradient_form"):
        call(quotient_of=z, quotient_out=q, quotient_epsilon=1e-6)
    with pytest.raises(ValueError, match="'quotient_out'.*like 'input'"):
        call(gradient_form=True, quotient_of=z, quotient_out=torch.ones(4, 6), quotient_epsilon=1e-6)
    with pytest.raises(ValueError, match="'quotient_epsilon' must be"):
        call(gradient_form=True, quotient_of=z, quotient_out=q, quotient_epsilon=-1.0)
    with pytest.raises(ValueError, match="quotient_out"):
        call(gradient_form=True, quotient_of=z, quotient_out=out, quotient_epsilon=1e-6)  # its own out
