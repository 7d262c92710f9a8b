"""The core's element-wise steps (lrptext._core.divide_stabilized and multiply, CPU only), which the engine uses for
the Norm rule of a sum and for the dense epsilon rule when its product runs in torch's BLAS, against the equations
element by element in float64:

- divide_stabilized: out_i = n_i / (d_i + ε sign(d_i)) with sign(0) = +1 (also for −0.0); with a factor f,
  act(f_i) n_i / (d_i + ε sign(d_i)) (relevance held as factors);
- multiply: out_i = c a_i b_i, or out_i + c a_i b_i with accumulate=True; with activation_a, act(a_i) for a_i: relu
  max(a_i, 0) (0 for NaN, as the dense rules read a ReLU's pre-activation), and GELU (exact and tanh form) and SiLU
  from their definitions with math.erfc and math.exp, as the dense epsilon rule reads them from a dropped
  activation's pre-activation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrptext._native import require_core

core = require_core()  # the module the engine runs (x86-64-v3 where the CPU has it)


def divided(n: float, d: float, eps: float) -> float:
    return n / (d + (eps if d >= 0 else -eps))  # -0.0 >= 0 is True: sign(-0.0) = +1


DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 70000)])  # the last one splits over the threads
def test_divide_stabilized_follows_the_equation(dtype, shape):
    g = torch.Generator().manual_seed(0)
    n, d = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(2))
    d.view(-1)[:4] = torch.tensor([0.0, -0.0, 1e-7, -1e-7], dtype=torch.float64)
    eps = 1e-3
    out = torch.empty(shape, dtype=dtype)
    core.divide_stabilized(n.to(dtype), d.to(dtype), out, epsilon=eps)
    flat_n, flat_d, flat_out = n.view(-1).tolist(), d.to(dtype).double().view(-1).tolist(), out.view(-1).tolist()
    for i in sorted({*range(min(8, len(flat_n))), *range(len(flat_n) - 3, len(flat_n))}):
        assert flat_out[i] == pytest.approx(divided(flat_n[i], flat_d[i], eps), rel=1e-6 if dtype == torch.float32
                                            else 1e-15)
    sign = torch.where(d.to(dtype).double() >= 0, 1.0, -1.0).double()
    expected = n / (d.to(dtype).double() + eps * sign)
    torch.testing.assert_close(out.double(), expected, rtol=1e-6 if dtype == torch.float32 else 1e-15, atol=0)


def test_divide_stabilized_in_place_and_epsilon_zero():
    n = torch.tensor([1.0, -2.0, 3.0, 4.0], dtype=torch.float64)
    d = torch.tensor([2.0, -4.0, 0.0, -0.0], dtype=torch.float64)
    core.divide_stabilized(n, d, n, epsilon=0.0)  # out is the numerator itself
    assert n[:2].tolist() == [0.5, 0.5]
    assert n[2].item() == n[3].item() == math.inf  # LRP-0 divides by zero: st(±0, 0) = +0, sign(-0.0) = +1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["identity", "relu", "gelu", "gelu_tanh", "silu"])
def test_divide_stabilized_with_a_factor_follows_the_equation(dtype, activation):
    """out = act(f) n / st(d): the dense epsilon rule's quotient of relevance held as factors (act(z) and the
    gradient), 200,000 elements (several threads' blocks), checked in float64 against the definitions above."""
    g = torch.Generator().manual_seed(2)
    n, d, f = (torch.randn(200000, generator=g, dtype=torch.float64).to(dtype) for _ in range(3))
    d[:4] = torch.tensor([0.0, -0.0, 1e-7, -1e-7])
    out = torch.empty_like(n)
    core.divide_stabilized(n, d, out, epsilon=1e-3, factor=f, activation_factor=activation)
    fd = f.double()
    act = {"identity": fd, "relu": fd.clamp_min(0)}.get(activation)
    if act is None:
        act = torch.tensor([ACTIVATIONS[activation](x) for x in fd.tolist()], dtype=torch.float64)
    sign = torch.where(d.double() >= 0, 1.0, -1.0).double()
    want = act * n.double() / (d.double() + 1e-3 * sign)
    rel = 4e-6 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(out.double(), want, rtol=rel, atol=rel * float(want.abs().max()))


def test_divide_stabilized_with_a_factor_in_place_and_refusals():
    n, d, f = torch.tensor([1.0, 2.0]), torch.tensor([2.0, -4.0]), torch.tensor([3.0, -1.0])
    core.divide_stabilized(n, d, f, epsilon=0.0, factor=f, activation_factor="relu")  # out is the factor itself
    assert f.tolist() == [1.5, -0.0]
    with pytest.raises(ValueError, match=r"divide_stabilized: 'factor' must have shape like 'numerator'"):
        core.divide_stabilized(n, d, torch.empty(2), epsilon=0.0, factor=torch.ones(3))
    with pytest.raises(ValueError, match=r"divide_stabilized: 'activation_factor' must be 'identity', 'relu', "
                                         r"'gelu', 'gelu_tanh' or 'silu', got 'tanh'"):
        core.divide_stabilized(n, d, torch.empty(2), epsilon=0.0, factor=n, activation_factor="tanh")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale,accumulate", [(1.0, False), (-0.5, False), (1.0, True), (2.0, True)])
def test_multiply_follows_the_equation(dtype, scale, accumulate):
    g = torch.Generator().manual_seed(1)
    a, b, start = (torch.randn(4, 70000, generator=g, dtype=torch.float64).to(dtype) for _ in range(3))
    out = start.clone()
    core.multiply(a, b, out, scale=scale, accumulate=accumulate)
    ad, bd, sd = (t.double().view(-1).tolist() for t in (a, b, start))
    got = out.double().view(-1).tolist()
    rel = 1e-6 if dtype == torch.float32 else 1e-15
    for i in (0, 1, 2, len(got) // 2, len(got) - 1):
        want = scale * ad[i] * bd[i] + (sd[i] if accumulate else 0.0)
        assert got[i] == pytest.approx(want, rel=rel, abs=rel)
    want = scale * a.double() * b.double() + (start.double() if accumulate else 0)
    torch.testing.assert_close(out.double(), want, rtol=rel, atol=rel)


@pytest.mark.parametrize("accumulate", [False, True])
def test_multiply_reads_relu_of_a_pre_activation(accumulate):
    a = torch.tensor([-2.0, -0.0, 0.0, 0.5, 3.0, math.nan, -math.inf], dtype=torch.float64)
    b = torch.tensor([1.0, 2.0, 3.0, 4.0, -5.0, 6.0, 7.0], dtype=torch.float64)
    out = torch.full_like(a, 10.0)
    core.multiply(a, b, out, scale=2.0, accumulate=accumulate, activation_a="relu")
    want = [(10.0 if accumulate else 0.0) + 2.0 * max(x, 0.0) * y if x == x else (10.0 if accumulate else 0.0)
            for x, y in zip(a.tolist(), b.tolist())]
    assert out.tolist() == want


def _logistic(v: float) -> float:
    return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))


# each activation from its definition, in float64 (the lower tails through erfc and e^v, without cancellation)
ACTIVATIONS = {
    "gelu": lambda x: x * 0.5 * math.erfc(-x / math.sqrt(2)),
    "gelu_tanh": lambda x: x * _logistic(2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)),
    "silu": lambda x: x * _logistic(x),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_multiply_reads_an_activation_of_a_pre_activation(activation, dtype):
    """Relative to each value, over [-30, 30] and at ±0 (b = 2 and scale = 0.5, exact: out = act(a)): within 2e-6 for
    |a| < 5 in float32 (the rounding of the exponent), 1.5e-5 in the lower tail where GELU is below 1e-6 of |a|;
    within 1e-14 in float64 there (1e-12 further out); values too small for the dtype's normal range only as
    small. Accumulating adds scale act(a) b to what out held."""
    grid = torch.linspace(-30, 30, 120001, dtype=torch.float64)
    a = torch.cat([grid, torch.tensor([0.0, -0.0, 1e-30, -1e-30], dtype=torch.float64)]).to(dtype)
    out = torch.empty_like(a)
    core.multiply(a, torch.full_like(a, 2.0), out, scale=0.5, activation_a=activation)
    act = torch.tensor([ACTIVATIONS[activation](x) for x in a.double().tolist()], dtype=torch.float64)
    got = out.double()
    tiny = torch.finfo(dtype).tiny * 1e4  # below: underflowing, where only the absolute size can be checked
    normal = act.abs() > tiny
    rel = ((got - act).abs() / act.abs())[normal]
    inner = (a.double().abs() < 5)[normal]
    if dtype == torch.float64:  # far out, u² in e^(-u²) rounds, here and in the reference alike
        assert float(rel[inner].max()) < 1e-14
        assert float(rel.max()) < 1e-12
    else:
        assert float(rel[inner].max()) < 2e-6
        assert float(rel.max()) < 1.5e-5
    assert bool((got[~normal].abs() <= tiny).all())  # GELU(0), SiLU(0) and the far lower tails

    b = torch.linspace(-2, 3, a.numel(), dtype=torch.float64).to(dtype)
    start = torch.full_like(a, 0.25)
    out = start.clone()
    core.multiply(a, b, out, scale=0.5, accumulate=True, activation_a=activation)
    want = 0.25 + 0.5 * act * b.double()
    tolerance = 1e-12 if dtype == torch.float64 else 3e-6
    torch.testing.assert_close(out.double(), want, rtol=tolerance, atol=tolerance * float(want.abs().max()))


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "silu"])
def test_multiply_keeps_nan_and_infinity_through_an_activation(activation):
    a = torch.tensor([math.nan, math.inf, -math.inf, 1.0])
    out = torch.empty(4)
    core.multiply(a, torch.ones(4), out, activation_a=activation)
    assert math.isnan(out[0]) and out[1] == math.inf and math.isnan(out[2])  # -inf x 0, as torch's GELU gives
    with pytest.raises(ValueError, match=r"multiply: 'activation_a' must be 'identity', 'relu', 'gelu', 'gelu_tanh' "
                                         r"or 'silu', got 'tanh'"):
        core.multiply(a, a, out, activation_a="tanh")


def test_multiply_in_place_into_either_operand_and_numpy():
    a = np.array([1.0, 2.0, 3.0])
    b = np.array([4.0, 5.0, 6.0])
    core.multiply(a, b, b)
    assert b.tolist() == [4.0, 10.0, 18.0]
    core.multiply(a, b, a, accumulate=True)  # a + a b
    assert a.tolist() == [5.0, 22.0, 57.0]


def test_the_element_wise_steps_refuse_bad_arguments():
    x = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"divide_stabilized: 'denominator' must have shape like 'numerator'"):
        core.divide_stabilized(x, torch.zeros(4, 3), torch.zeros(3, 4), epsilon=1e-6)
    with pytest.raises(ValueError, match=r"multiply: 'out' must be 2-D like 'a'"):
        core.multiply(x, x, torch.zeros(12), accumulate=False)
    with pytest.raises(ValueError, match="float64"):
        core.multiply(x, x.double(), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="'epsilon' must be a finite number >= 0"):
        core.divide_stabilized(x, x, torch.zeros(3, 4), epsilon=-1.0)
    with pytest.raises(ValueError, match="'scale' must be a finite number"):
        core.multiply(x, x, torch.zeros(3, 4), scale=math.nan)
    with pytest.raises(ValueError, match="contiguous"):
        core.multiply(x.t(), x.t(), torch.zeros(4, 3))
    big = torch.zeros(8)
    with pytest.raises(ValueError, match="'out' shares memory with 'a'"):  # a partial overlap, not the same array
        core.multiply(big[:6], torch.ones(6), big[2:])
    read_only = np.zeros(3)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="'out' is read-only"):
        core.multiply(np.ones(3), np.ones(3), read_only)
