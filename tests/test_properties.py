"""Property-based tests of every kernel binding: for random ranks, shapes (zero-size included), strides, dtypes,
geometry, token ids, offsets and extreme values, the outcome is either the torch backend's result or a documented
exception (ValueError / TypeError), never a crash, a hang or a read out of bounds (scripts/sanitize.sh runs these
under AddressSanitizer). Deterministic: hypothesis is derandomised, so CI sees the same cases every run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from lrptext import _core, kernels as K
from lrptext.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, ZPlus

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RULES = [Epsilon(1e-3), Gamma(0.25), ZPlus(), AlphaBeta(2, 1), ZBox(-2.0, 3.0), Flat(), WSquare()]
DOCUMENTED = (ValueError, TypeError)


def tensor(draw, shape, *, dtype=torch.float64, low=-3.0, high=3.0):
    values = draw(st.lists(st.floats(low, high, allow_nan=False, width=32), min_size=int(np.prod(shape)),
                           max_size=int(np.prod(shape))))
    return torch.tensor(values, dtype=dtype).reshape(shape)


def same(a, b):
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9, equal_nan=True)


@st.composite
def dense_case(draw):
    rows, n_in, n_out = draw(st.integers(0, 5)), draw(st.integers(1, 8)), draw(st.integers(1, 8))
    return (tensor(draw, (rows, n_in)), tensor(draw, (n_out, n_in)), tensor(draw, (n_out,)),
            tensor(draw, (rows, n_out)), draw(st.sampled_from(RULES)))


@SETTINGS
@given(dense_case())
def test_dense_equals_the_torch_backend(case):
    x, w, b, r, rule = case
    same(K.dense_relevance(x, w, b, r, rule=rule, backend="cpp"),
         K.dense_relevance(x, w, b, r, rule=rule, backend="torch"))


DTYPES = [torch.float32, torch.float64, torch.float16, torch.int32, torch.int64]


@st.composite
def arbitrary_array(draw):
    """Any rank 0-3, any small shape (zero included), any dtype, contiguous or not."""
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=3)))
    t = torch.ones(shape, dtype=torch.float64).to(draw(st.sampled_from(DTYPES)))
    if t.dim() >= 2 and draw(st.booleans()):
        t = t.transpose(0, 1)
    return t


@SETTINGS
@given(arbitrary_array(), arbitrary_array(), st.one_of(st.none(), arbitrary_array()), arbitrary_array(),
       arbitrary_array(), st.sampled_from(["epsilon", "gamma", "alpha_beta", "flat", "wsquare"]))
def test_the_dense_binding_never_crashes(x, w, b, r, out, rule):
    try:
        _core.dense_relevance(x, w, b, r, out, rule=rule, alpha=2.0 if rule == "alpha_beta" else 1.0,
                              beta=1.0 if rule == "alpha_beta" else 0.0)
    except DOCUMENTED:
        pass


@st.composite
def conv_case(draw):
    cin_g, cout_g, groups = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    geometry = dict(stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                    padding=(draw(st.integers(0, 2)), draw(st.integers(0, 2))),
                    dilation=(draw(st.integers(1, 2)), draw(st.integers(1, 2))), groups=groups)
    batch = draw(st.integers(0, 2))
    x = tensor(draw, (batch, cin_g * groups, h, w))
    weight = tensor(draw, (cout_g * groups, cin_g, kh, kw))
    return x, weight, geometry, draw(st.sampled_from(RULES)), draw(st.booleans())


@SETTINGS
@given(conv_case(), st.data())
def test_conv_equals_the_torch_backend_or_refuses_the_geometry(case, data):
    x, w, geometry, rule, reduce = case
    try:
        y = torch.nn.functional.conv2d(x, w, None, **geometry)
    except RuntimeError:  # torch refuses the geometry: so must we
        with pytest.raises(ValueError):
            r = torch.zeros(x.shape[0], w.shape[0], 1, 1, dtype=x.dtype)
            K.conv2d_relevance(x, w, None, r, rule=rule, backend="cpp", **geometry)
        return
    r = tensor(data.draw, tuple(y.shape))
    kwargs = dict(rule=rule, reduce_channels=reduce, **geometry)
    same(K.conv2d_relevance(x, w, None, r, backend="cpp", **kwargs),
         K.conv2d_relevance(x, w, None, r, backend="torch", **kwargs))


@SETTINGS
@given(st.lists(st.integers(-5, 2**40), min_size=0, max_size=12), st.integers(1, 10),
       st.one_of(st.none(), st.integers(-12, 12)), st.sampled_from([torch.int32, torch.int64]), st.booleans())
def test_embedding_ids(ids, vocab, padding_idx, id_dtype, reduce):
    if id_dtype == torch.int32:
        ids = [i if -2**31 <= i < 2**31 else 2**31 - 1 for i in ids]
    ids_t = torch.tensor(ids, dtype=id_dtype)
    r = torch.arange(len(ids) * 3, dtype=torch.float64).reshape(len(ids), 3)
    outcomes = []
    for backend in ("cpp", "torch"):
        try:
            outcomes.append(K.embedding_relevance(ids_t, r, num_embeddings=vocab, padding_idx=padding_idx,
                                                  reduce=reduce, backend=backend))
        except DOCUMENTED as error:
            outcomes.append(type(error))
    valid = all(0 <= i < vocab for i in ids) and (padding_idx is None or -vocab <= padding_idx < vocab)
    if valid:
        same(outcomes[0], outcomes[1])
    else:
        assert outcomes == [ValueError, ValueError]


@SETTINGS
@given(st.lists(st.integers(0, 9), min_size=0, max_size=10), st.lists(st.integers(-2, 12), min_size=0, max_size=4),
       st.sampled_from(["sum", "mean"]), st.booleans(), st.data())
def test_embedding_bag_offsets(ids, offsets, mode, given_output, data):
    ids_t, offsets_t = torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)
    weight = tensor(data.draw, (10, 3), low=0.125, high=2.0)
    r = tensor(data.draw, (len(offsets), 3))
    output = tensor(data.draw, (len(offsets), 3), low=-2.0, high=2.0) if given_output else None
    valid = (not offsets or offsets[0] == 0) and all(a <= b for a, b in zip(offsets, offsets[1:])) and \
        all(o <= len(ids) for o in offsets)
    outcomes = []
    for backend in ("cpp", "torch"):
        try:
            outcomes.append(K.embedding_bag_relevance(ids_t, weight, r, offsets=offsets_t, mode=mode, output=output,
                                                      backend=backend))
        except DOCUMENTED as error:
            outcomes.append(type(error))
    if valid:
        same(outcomes[0], outcomes[1])
    else:
        assert outcomes == [ValueError, ValueError]


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.integers(1, 4), st.integers(1, 3),
       st.integers(0, 2), st.integers(1, 2), st.sampled_from(["max", "avg"]), st.data())
def test_pooling_equals_the_torch_backend_or_refuses_the_window(channels, h, w, kernel, stride, padding, dilation,
                                                                 mode, data):
    x = tensor(data.draw, (2, channels, h, w), low=0.0)
    forward = (lambda v: torch.nn.functional.max_pool2d(v, kernel, stride, padding, dilation)) if mode == "max" \
        else (lambda v: torch.nn.functional.avg_pool2d(v, kernel, stride, padding))
    call = K.max_pool2d_relevance if mode == "max" else K.avg_pool2d_relevance
    kwargs = dict(kernel_size=kernel, stride=stride, padding=padding)
    if mode == "max":
        kwargs["dilation"] = dilation
    try:
        y = forward(x)
    except RuntimeError:
        with pytest.raises(ValueError):
            call(x, torch.zeros(2, channels, 1, 1, dtype=x.dtype), backend="cpp", **kwargs)
        return
    r = tensor(data.draw, tuple(y.shape))
    if not torch.isfinite(y).all():  # a max window of padding only: torch says -inf, lrptext refuses
        for backend in ("cpp", "torch"):
            with pytest.raises(ValueError, match="covers only padding"):
                call(x, r, backend=backend, **kwargs)
        return
    same(call(x, r, backend="cpp", **kwargs), call(x, r, backend="torch", **kwargs))


EXTREMES = st.sampled_from([0.0, -0.0, 1e-38, -1e-38, 3e38, -3e38, 1.0, float("nan"), float("inf"), -float("inf")])


@SETTINGS
@given(st.lists(EXTREMES, min_size=12, max_size=12), st.sampled_from(RULES), st.booleans())
def test_extreme_values_raise_or_propagate(values, rule, check):
    x = torch.tensor(values[:4], dtype=torch.float32).reshape(1, 4)
    w = torch.tensor(values[4:12], dtype=torch.float32).reshape(2, 4)
    r = torch.ones(1, 2)
    finite = bool(torch.isfinite(x).all())
    try:
        out = K.dense_relevance(x, w, None, r, rule=rule, check_finite=check, backend="cpp")
    except ValueError:
        assert check and not finite  # only non-finite inputs are refused
        return
    assert out.shape == (1, 4)  # overflow and NaN propagate as IEEE values when not refused


@st.composite
def rows_case(draw):
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=3)))
    x, r = tensor(draw, shape), tensor(draw, shape)
    return x, r, draw(st.sampled_from(["layer_norm", "softmax"])), draw(st.booleans()), draw(st.booleans())


@SETTINGS
@given(rows_case())
def test_row_relevance_matches_torch_or_refuses(case):
    x, r, rule, with_bias, single = case
    if single:
        x, r = x.float(), r.float()
    width = x.shape[-1]
    try:
        if rule == "softmax":
            y = torch.softmax(x, -1)
            got = K.softmax_relevance(x, y, r, backend="cpp")
            expected = K.softmax_relevance(x, y, r, backend="torch")
        else:
            bias = torch.linspace(-1, 1, width, dtype=x.dtype) if with_bias else None
            y = torch.nn.functional.layer_norm(x, (width,), bias=bias)
            got = K.layer_norm_relevance(x, y, r, bias=bias, backend="cpp")
            expected = K.layer_norm_relevance(x, y, r, bias=bias, backend="torch")
    except DOCUMENTED:
        return
    assert got.shape == x.shape
    torch.testing.assert_close(got, expected, rtol=1e-3 if single else 1e-6, atol=1e-3 if single else 1e-9,
                               equal_nan=True)
