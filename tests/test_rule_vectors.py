"""The test vectors of docs/conventions.md, produced with zennit 1.0.0 in float64: our kernels must reproduce
zennit's numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrptext.kernels import dense_relevance
from lrptext.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, ZPlus

W = [[2.0, 1.0, -0.25], [-1.0, 0.5, 2.0]]
B = [0.1, -0.2]
X = [1.0, -0.5, 2.0]

VECTORS = [
    # (rule, output relevance, expected input relevance)
    (Epsilon(0.0), [1, 0], [1.818182, -0.454545, -0.454545]),
    (Epsilon(1e-6), [1, 0], [1.818180, -0.454545, -0.454545]),
    (Epsilon(0.25), [1, 0], [1.481481, -0.370370, -0.370370]),
    (Gamma(0.25), [1, 0], [1.538461, -0.307692, -0.307692]),
    (ZPlus(), [1, 0], [0.952380, 0.0, 0.0]),
    (AlphaBeta(2, 1), [1, 0], [1.904761, -0.5, -0.5]),
    (ZBox(-1.0, 2.0), [1, 0], [0.888889, 0.111111, 0.0]),
    (WSquare(), [1, 0], [0.788566, 0.197141, 0.012321]),
    (WSquare(zero_params="bias"), [1, 0], [0.790123, 0.197531, 0.012346]),
    (Flat(), [1, 0], [1 / 3, 1 / 3, 1 / 3]),
    (Epsilon(1e-6), [0, 1], [-0.392157, -0.098039, 1.568627]),
    (Gamma(0.25), [0, 1], [-0.281690, -0.070423, 1.408450]),
    (AlphaBeta(2, 1), [0, 1], [-0.689655, -0.172414, 2.0]),
]

# The edge z_0 = 0 (b_0 = -1).
EDGE = [
    (Epsilon(0.0), [math.inf, -math.inf, -math.inf]),
    (Epsilon(1e-6), [2e6, -5e5, -5e5]),
    (Gamma(0.25), [0.0, 0.0, 0.0]),
    (ZPlus(), [0.9999995, 0.0, 0.0]),
]


def run(rule, relevance, bias, backend, framework):
    arrays = [np.array([X]), np.array(W), np.array(bias), np.array([relevance], dtype=np.float64)]
    if framework == "torch":
        arrays = [torch.from_numpy(a) for a in arrays]
    out = dense_relevance(*arrays, rule=rule, backend=backend)
    return np.asarray(out)[0]


@pytest.mark.parametrize("framework", ["numpy", "torch"])
@pytest.mark.parametrize(("rule", "relevance", "expected"), VECTORS, ids=[f"{v[0]!r}-{v[1]}" for v in VECTORS])
def test_zennit_vectors(rule, relevance, expected, backend, framework):
    out = run(rule, relevance, B, backend, framework)
    np.testing.assert_allclose(out, expected, rtol=0, atol=2e-6)


@pytest.mark.parametrize(("rule", "expected"), EDGE, ids=[repr(e[0]) for e in EDGE])
def test_zero_preactivation(rule, expected, backend):
    with np.errstate(divide="ignore", invalid="ignore"):
        out = run(rule, [1, 0], [-1.0, -0.2], backend, "torch")
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-9)


def test_a_wrong_rule_does_not_match(backend):
    """The suite can fail: gamma's numbers are not epsilon's."""
    out = run(Gamma(0.25), [1, 0], B, backend, "numpy")
    assert np.abs(out - np.array(VECTORS[1][2])).max() > 0.1


def test_stabilizer_treats_negative_zero_as_positive(backend):
    x = np.array([[1.0, 1.0]])
    w = np.array([[1.0, -1.0]])
    out = dense_relevance(x, w, np.array([-0.0]), np.array([[1.0]]), rule=Epsilon(0.5), backend=backend)
    np.testing.assert_allclose(out, [[2.0, -2.0]])  # st(-0.0) = +0.5


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: AlphaBeta(1, 1), "alpha - beta must be 1"),
        (lambda: AlphaBeta(-1, -2), "'alpha' must be a finite number >= 0"),
        (lambda: Epsilon(-1), "'epsilon' must be a finite number >= 0"),
        (lambda: Gamma(float("nan")), "'gamma' must be a finite number >= 0"),
        (lambda: ZBox(1.0, -1.0), "'low' must be <= 'high'"),
        (lambda: ZBox((0, 0), (1, 1, 1)), "'low' has 2 channels but 'high' has 3"),
        (lambda: WSquare(zero_params="weight"), "'zero_params' must be None or 'bias'"),
    ],
)
def test_invalid_rules(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_rules_are_immutable_values():
    assert Gamma(0.25) == Gamma(0.25) and hash(Gamma(0.25)) == hash(Gamma(0.25))
    with pytest.raises(AttributeError):
        Gamma().gamma = 1.0  # type: ignore[misc]
    assert repr(ZPlus()) == "ZPlus(stabilizer=1e-06)"
    assert ZBox(np.array([0.0, -1.0]), torch.tensor([1.0, 1.0])).low == (0.0, -1.0)


RULES = [Epsilon(0.1), Gamma(0.5), AlphaBeta(2, 1), ZPlus(), ZBox(-1.0, 2.0), Flat(), WSquare()]


@pytest.mark.parametrize("rule", RULES, ids=repr)
def test_the_rule_table_agrees_between_python_and_the_core(rule):
    """Each rule declares its modified weights once (lrptext/rules/rule.py); the core's table
    (csrc/include/lrptext/rule_table.h) must compute the same ones, and refuse buffers the rule does not make."""
    from lrptext import _native
    from lrptext.kernels import native, torch_backend

    if _native.core is None:
        pytest.skip("lrptext was built without its C++ core")
    weight = torch.tensor(W, dtype=torch.float64)
    declared = rule.modify_weights(weight)
    assert sum(w is not None for w in declared) == rule.modified_weights
    for ours, core in zip(torch_backend.prepare_weights(rule, weight), native.prepare_weights(rule, weight)):
        assert (ours is None) == (core is None)
        if ours is not None:
            torch.testing.assert_close(core, ours, rtol=0, atol=0)
    # buffers for one weight more (or, for two, one fewer) than the rule makes
    count = rule.modified_weights + 1 if rule.modified_weights < 2 else 1
    buffers = [torch.empty_like(weight) if i < count else None for i in range(2)]
    with pytest.raises(ValueError, match=f"rule '{rule.kernel}' prepares {rule.modified_weights} weights"):
        _native.core.prepare_rule_weights(weight, *buffers, rule=rule.kernel, **rule.kernel_args())
