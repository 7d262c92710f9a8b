"""Dense and convolution kernels against the float64 oracle: rule x dtype x contiguity x shape x backend x device."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reference
from core_settings import core_threads, core_winograd
from lrptext.kernels import conv1d_relevance, conv2d_relevance, dense_relevance, prepare_weights
from lrptext.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, ZPlus
from tolerances import assert_matches, relative_error

# (lrptext rule, the oracle's description of the same rule)
RULES = {
    "epsilon": (Epsilon(1e-6), {"name": "epsilon", "epsilon": 1e-6}),
    "epsilon0.25": (Epsilon(0.25), {"name": "epsilon", "epsilon": 0.25}),
    "gamma": (Gamma(0.25), {"name": "gamma", "gamma": 0.25}),
    "gamma1": (Gamma(1.0, stabilizer=1e-3), {"name": "gamma", "gamma": 1.0, "stabilizer": 1e-3}),
    "zplus": (ZPlus(), {"name": "alpha_beta", "alpha": 1.0, "beta": 0.0}),
    "alpha2beta1": (AlphaBeta(2, 1), {"name": "alpha_beta", "alpha": 2.0, "beta": 1.0}),
    "zbox": (ZBox(-1.5, 2.5), {"name": "zbox"}),
    "wsquare": (WSquare(), {"name": "wsquare"}),
    "wsquare_nobias": (WSquare(zero_params="bias"), {"name": "wsquare", "use_bias": False}),
    "flat": (Flat(), {"name": "flat"}),
}


def make(shape, dtype, device, seed, *, strided=False, positive=False):
    """Seeded data; `strided` returns a non-contiguous view with the same values."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g, dtype=torch.float64)
    if positive:
        t = t.clamp(min=0)
    t = t.to(dtype)
    if strided:
        wide = torch.zeros(shape[:-1] + (2 * shape[-1],), dtype=dtype)
        wide[..., ::2] = t
        t = wide[..., ::2]
        assert not t.is_contiguous()
    return t.to(device)


def bounds(rule, channels):
    if isinstance(rule, ZBox):
        low, high = rule.channels(channels)
        return {"low": np.array(low), "high": np.array(high)}
    return {}


# one sample, one input or one output feature: the matrix-vector paths of the GEMM
DENSE_SHAPES = [(1, 3, 2), (5, 17, 9), (4, 40, 33), (3, 1, 4), (2, 5, 1)]


@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=[f"{s}" for s in DENSE_SHAPES])
@pytest.mark.parametrize("rule_name", RULES)
def test_dense_matches_oracle(rule_name, shape, strided, dtype, backend, device):
    rule, spec = RULES[rule_name]
    rows, n_in, n_out = shape
    seed = zlib.crc32(repr((rule_name, shape)).encode())
    x = make((rows, n_in), dtype, device, seed, strided=strided)
    w = make((n_out, n_in), dtype, device, seed + 1)
    b = make((n_out,), dtype, device, seed + 2)
    r = make((rows, n_out), dtype, device, seed + 3, strided=strided)
    out = dense_relevance(x, w, b, r, rule=rule, backend=backend)
    assert out.dtype == dtype and out.device.type == device and out.shape == x.shape
    expected = reference.dense(*(a.cpu().numpy() for a in (x, w, b, r)), spec, **bounds(rule, n_in))
    assert_matches(out, expected, dtype)


@dataclass(frozen=True)
class Conv:
    batch: int
    cin: int
    size: tuple[int, int]
    cout: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1


CONV_CASES = [
    Conv(2, 4, (6, 5), 6, (3, 2), stride=(1, 2), padding=(1, 0), groups=2),
    Conv(1, 3, (7, 7), 4, (3, 3), stride=(2, 2), padding=(1, 1), dilation=(2, 2)),
    Conv(3, 5, (4, 4), 6, (1, 1)),  # the 1x1 path that skips im2col
    # stride 1: G gathers from the relevance with the transposed kernel
    Conv(2, 4, (6, 5), 6, (3, 2), padding=(1, 2), dilation=(2, 1), groups=2),  # output wider than the input
    Conv(1, 3, (5, 6), 2, (2, 3), padding=(3, 0)),  # padding beyond the kernel: whole rows of taps outside
    Conv(1, 2, (12, 13), 3, (3, 3), padding=(1, 1)),  # "same": one copy per tap; 156 positions split in tiles
    Conv(2, 3, (3, 3), 4, (3, 3)),  # one output position: matrix-vector products
    # stride 1, fewer input positions (16) than transposed columns have rows (72): input-side columns, as deep in VGG
    Conv(2, 3, (4, 4), 8, (3, 3), padding=(1, 1)),
]
# 3x3 of stride 1, for Winograd's F(2x2, 3x3): the last 2x2 tiles cut by odd sizes; padding 2 / 0 makes the
# transposed pass's 0 / 2, and padding 3 its -1 (it reads inside the relevance)
WINOGRAD_CASES = [Conv(2, 3, (7, 9), 4, (3, 3), padding=(1, 1)), Conv(3, 2, (6, 5), 3, (3, 3), padding=(2, 0)),
                  Conv(1, 2, (5, 6), 3, (3, 3), padding=(3, 1))]


def conv_id(c: Conv) -> str:
    return f"k{c.kernel}s{c.stride}p{c.padding}d{c.dilation}g{c.groups}"


@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("case", CONV_CASES, ids=conv_id)
@pytest.mark.parametrize("rule_name", RULES)
def test_conv2d_matches_oracle(rule_name, case, strided, dtype, backend, device):
    check_conv2d(rule_name, case, strided, dtype, backend, device)


@pytest.mark.cuda
@pytest.mark.parametrize("path", ["cudnn", "cudnn timed", "columns"])
@pytest.mark.parametrize("case", CONV_CASES, ids=conv_id)
@pytest.mark.parametrize("rule_name", ["epsilon", "zplus", "alpha2beta1", "zbox"])
def test_cuda_transposed_pass_by_cudnn_and_by_columns(rule_name, case, path, dtype, cuda_device, monkeypatch):
    """CUDA's transposed pass G runs through cuDNN's backward-data with LRPTEXT_CUDNN=1 (its heuristics' first
    algorithm) or =find (the fastest it times) where torch has loaded cuDNN, else as GEMMs into columns and a
    gathering col2im: each against the oracle."""
    import lrptext

    monkeypatch.setenv("LRPTEXT_CUDNN", {"cudnn": "1", "cudnn timed": "find", "columns": "0"}[path])
    if path != "columns" and torch.backends.cudnn.is_available():
        assert lrptext.build_info()["cudnn"], "torch has cuDNN but lrptext's kernels could not load it"
    check_conv2d(rule_name, case, False, dtype, "cpp", cuda_device)


@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=conv_id)
@pytest.mark.parametrize("rule_name", RULES)
def test_winograd_conv2d_matches_oracle(rule_name, case, dtype):
    """The CPU kernels with Winograd's F(2x2, 3x3) for every 3x3 convolution of stride 1 (set_winograd('always'):
    'auto' takes it from 64 channels, too many for the oracle's dense Jacobian)."""
    with core_winograd("always"):
        check_conv2d(rule_name, case, False, dtype, "cpp", "cpu")


@pytest.mark.parametrize("rule_name", ["alpha2beta1", "flat", "wsquare", "zbox"])
def test_rules_without_bounded_quotients_keep_direct_sums(rule_name):
    """Winograd's rounding leaks a large quotient s_j into its 4x4 block's neighbours, where direct sums multiply it
    by exact zeros: the rules whose s_j has no bound (alpha-beta's beta term, flat, w^2; z^B, a first layer) keep
    direct sums even with set_winograd('always'); z+ takes Winograd's way. A bias-free layer over an image half
    zero."""
    x = make((1, 4, 12, 12), torch.float32, "cpu", 95)
    x[:, :, :6] = 0
    w, r = make((4, 4, 3, 3), torch.float32, "cpu", 96), make((1, 4, 12, 12), torch.float32, "cpu", 97)
    outs = {}
    for name in (rule_name, "zplus"):
        rule, _ = RULES[name]
        for mode in ("always", "never"):
            with core_winograd(mode):
                outs[name, mode] = conv2d_relevance(x, w, None, r, padding=1, rule=rule, backend="cpp")
    assert torch.equal(outs[rule_name, "always"], outs[rule_name, "never"])
    assert not torch.equal(outs["zplus", "always"], outs["zplus", "never"])


AUTO_CASES = {"64 channels, 8 x 8 tiles": ((2, 64, 16, 16), True), "7 x 8 tiles": ((2, 64, 14, 16), False),
              "256 channels, 1 sample": ((1, 256, 24, 24), False), "3 samples": ((3, 256, 24, 24), True)}


@pytest.mark.parametrize("case", AUTO_CASES)
def test_auto_takes_winograd_where_it_pays(case):
    """'auto' takes Winograd's way from 64 channels over 128+ 2x2 output tiles with the transformed weight at most
    three times the input: 64 channels over 8 x 8 tiles per sample but not 7 x 8; 256 channels over 12 x 12 tiles
    at 3 samples but not at 1 (a transformed weight of 1M floats against 147K). Where it does, the result differs
    from 'never''s direct sums by Winograd's rounding; where it does not, it is theirs bit for bit."""
    shape, taken = AUTO_CASES[case]
    x, r = make(shape, torch.float64, "cpu", 90), make(shape, torch.float64, "cpu", 93)
    w, b = make((shape[1], shape[1], 3, 3), torch.float64, "cpu", 91), make(shape[1:2], torch.float64, "cpu", 92)
    auto = conv2d_relevance(x, w, b, r, padding=1, rule=Epsilon(0.25), backend="cpp")
    with core_winograd("never"):
        direct = conv2d_relevance(x, w, b, r, padding=1, rule=Epsilon(0.25), backend="cpp")
    assert torch.equal(auto, direct) != taken
    assert relative_error(auto, direct) < 1e-12


def check_conv2d(rule_name, case, strided, dtype, backend, device):
    rule, spec = RULES[rule_name]
    seed = zlib.crc32(repr((rule_name, case)).encode())
    x = make((case.batch, case.cin) + case.size, dtype, device, seed, strided=strided)
    w = make((case.cout, case.cin // case.groups) + case.kernel, dtype, device, seed + 1)
    b = make((case.cout,), dtype, device, seed + 2)
    conv = dict(stride=case.stride, padding=case.padding, dilation=case.dilation, groups=case.groups)
    y = F.conv2d(x, w, b, **conv)
    r = make(tuple(y.shape), dtype, device, seed + 3, strided=strided)
    out = conv2d_relevance(x, w, b, r, rule=rule, backend=backend, **conv)
    assert out.shape == x.shape and out.dtype == dtype
    expected = reference.conv2d(*(a.cpu().numpy() for a in (x, w, b, r)), spec, **conv, **bounds(rule, case.cin))
    assert_matches(out, expected, dtype)


@pytest.mark.parametrize("stride, padding", [(2, 1), (1, 3)], ids=["strided", "stride-1"])
@pytest.mark.parametrize("rule_name", RULES)
def test_conv1d_matches_oracle(rule_name, stride, padding, dtype, backend, device):
    """Strided, and of stride 1 (the core's one GEMM per tap over shifted views), with padding wider than some taps
    reach."""
    rule, spec = RULES[rule_name]
    x = make((2, 5, 11), dtype, device, 11)
    w = make((4, 5, 3), dtype, device, 12)
    b = make((4,), dtype, device, 13)
    y = F.conv1d(x, w, b, stride=stride, padding=padding, dilation=2)
    r = make(tuple(y.shape), dtype, device, 14)
    out = conv1d_relevance(x, w, b, r, stride=stride, padding=padding, dilation=2, rule=rule, backend=backend)
    as4d = lambda a: a.cpu().numpy()[:, :, None]  # noqa: E731
    expected = reference.conv2d(as4d(x), as4d(w), b.cpu().numpy(), as4d(r), spec, stride=(1, stride),
                                padding=(0, padding), dilation=(1, 2), **bounds(rule, 5))
    assert_matches(out, expected[:, :, 0], dtype)



@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("rule_name", ["epsilon0.25", "gamma", "alpha2beta1", "zbox", "flat"])
def test_conv1d_of_stride_one_over_several_tiles(rule_name, batch, threads):
    """A text CNN's shape, scaled down: sequences long enough for several tiles of positions per sample, split
    over the threads or run one after another; against the torch backend (epsilon large enough that outputs near
    z = 0 do not magnify the two backends' rounding)."""
    rule, _ = RULES[rule_name]
    x = make((batch, 40, 700), torch.float64, "cpu", 65)
    w, b = make((30, 40, 5), torch.float64, "cpu", 66), make((30,), torch.float64, "cpu", 67)
    r = make((batch, 30, 700), torch.float64, "cpu", 68)
    with core_threads(threads):
        out = conv1d_relevance(x, w, b, r, padding=2, rule=rule, backend="cpp")
    expected = conv1d_relevance(x, w, b, r, padding=2, rule=rule, backend="torch")
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("rule_name", ["epsilon", "gamma", "flat"])
def test_conv_tiles_do_not_change_the_result(rule_name, threads):
    """Large enough for several tiles of columns per sample, some of them starting mid-row; samples fewer than
    threads (a 3x5 kernel: a 3x3 one would take Winograd's way)."""
    rule, _ = RULES[rule_name]
    x = make((1, 24, 43, 41), torch.float64, "cpu", 60)
    w, b = make((40, 24, 3, 5), torch.float64, "cpu", 61), make((40,), torch.float64, "cpu", 62)
    r = make((1, 40, 43, 41), torch.float64, "cpu", 63)
    with core_threads(threads):
        out = conv2d_relevance(x, w, b, r, padding=(1, 2), rule=rule, backend="cpp")
    expected = conv2d_relevance(x, w, b, r, padding=(1, 2), rule=rule, backend="torch")
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("padding", [(1, 1), (0, 2)])
@pytest.mark.parametrize("rule_name", ["epsilon0.25", "gamma", "gamma1", "zplus"])
def test_winograd_convolutions_over_blocks_and_threads(rule_name, padding, threads):
    """3x3 convolutions of stride 1 (Winograd's F(2x2, 3x3)) over 7 samples whose 2x2 output tiles run in blocks
    across samples and tile rows, one after another or split over the threads; inputs of both signs (z+'s products
    accumulate), against the torch backend's direct sums (epsilon large enough that z near zero does not
    magnify the two ways' rounding of z). Winograd's rounding is relative to the largest term of a 4x4 input patch,
    not of each output's own 3x3 window, hence the bound relative to the largest relevance."""
    rule, _ = RULES[rule_name]
    x = make((7, 6, 21, 19), torch.float64, "cpu", 64)
    w, b = make((5, 6, 3, 3), torch.float64, "cpu", 65), make((5,), torch.float64, "cpu", 66)
    y = F.conv2d(x, w, b, padding=padding)
    r = make(tuple(y.shape), torch.float64, "cpu", 67)
    with core_threads(threads), core_winograd("always"):
        out = conv2d_relevance(x, w, b, r, padding=padding, rule=rule, backend="cpp")
    expected = conv2d_relevance(x, w, b, r, padding=padding, rule=rule, backend="torch")
    assert relative_error(out, expected) < 1e-12


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("channels", [(1, 32), (32, 64)], ids=["widening", "deep"])
@pytest.mark.parametrize("rule_name", ["epsilon", "gamma", "alpha2beta1", "zbox", "flat"])
def test_small_images_share_tiles_across_samples(rule_name, channels, threads):
    """8x8 images (the digits CNN's): several samples' columns go side by side into one tile, in the forward
    GEMMs and in the scattered backward ones; 141 samples (enough multiply-adds to split them over the threads) do
    not fill the last block."""
    rule, _ = RULES[rule_name]
    cin, cout = channels
    x = make((141, cin, 8, 8), torch.float64, "cpu", 80)
    w, b = make((cout, cin, 3, 3), torch.float64, "cpu", 81), make((cout,), torch.float64, "cpu", 82)
    r = make((141, cout, 8, 8), torch.float64, "cpu", 83)
    with core_threads(threads):
        out = conv2d_relevance(x, w, b, r, padding=1, rule=rule, backend="cpp")
    expected = conv2d_relevance(x, w, b, r, padding=1, rule=rule, backend="torch")
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9 * float(expected.abs().max()))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape", [(1, 3001, 700), (700, 3001, 1)], ids=["one-sample", "one-output"])
@pytest.mark.parametrize("rule_name", ["epsilon", "gamma", "zbox"])
def test_large_matrix_vector_products_split_over_threads(rule_name, shape, threads):
    """One sample through a wide layer (or one output feature of many samples): matrix-vector products of more
    than 2^21 multiply-adds are split over the threads by output rows, an odd count of them."""
    rule, _ = RULES[rule_name]
    n, i, o = shape
    x, w = make((n, i), torch.float64, "cpu", 70), make((o, i), torch.float64, "cpu", 71)
    b, r = make((o,), torch.float64, "cpu", 72), make((n, o), torch.float64, "cpu", 73)
    with core_threads(threads):
        out = dense_relevance(x, w, b, r, rule=rule, backend="cpp")
    expected = dense_relevance(x, w, b, r, rule=rule, backend="torch")
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9 * float(expected.abs().max()))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 3001, 700), (3, 40, 7), (1, 5, 1)], ids=["wide", "small", "one-output"])
def test_the_core_dense_forward_is_a_linear_layer(shape, dtype, threads):
    """y = x W^T + b, against float64 torch; the wide layer's product is split over the threads."""
    from lrptext.kernels import native

    rows, i, o = shape
    x, w, b = make((rows, i), dtype, "cpu", 90), make((o, i), dtype, "cpu", 91), make((o,), dtype, "cpu", 92)
    with core_threads(threads):
        out, no_bias = native.dense_forward(x, w, b), native.dense_forward(x, w, None)
    expected = F.linear(x.double(), w.double(), b.double())
    assert out.dtype == dtype
    assert_matches(out, expected.numpy(), dtype)
    assert_matches(no_bias, (expected - b.double()).numpy(), dtype)


CONV_FORWARD = [  # (input shape, weight shape, stride, padding, dilation, groups)
    ((1, 1, 8, 8), (32, 1, 3, 3), (1, 1), (1, 1), (1, 1), 1),  # the digits CNN at batch 1
    ((41, 32, 8, 8), (64, 32, 3, 3), (1, 1), (1, 1), (1, 1), 1),  # samples side by side, split over threads
    ((2, 6, 13, 11), (4, 3, 3, 2), (2, 1), (1, 0), (1, 2), 2),
    ((3, 4, 5, 7), (6, 4, 1, 1), (1, 1), (0, 0), (1, 1), 1),  # 1x1: the input is its own column matrix
    ((1, 24, 43, 41), (40, 24, 3, 5), (1, 1), (1, 2), (1, 1), 1),  # several tiles per sample
    ((3, 5, 14, 11), (4, 5, 3, 3), (1, 1), (0, 1), (1, 1), 1),  # with Winograd: the last 2x2 tiles cut
    ((3, 40, 1, 700), (30, 40, 1, 5), (1, 1), (0, 4), (1, 2), 1),  # 1-d of stride 1: one GEMM per tap
]


@pytest.mark.parametrize("winograd", ["never", "always"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CONV_FORWARD, ids=[str(c[1]) for c in CONV_FORWARD])
def test_the_core_conv_forward_is_a_convolution(case, dtype, threads, winograd):
    """The engine's forward pass of a convolution, against float64 torch (with and without bias); its 3x3 ones of
    stride 1 also by Winograd's F(2x2, 3x3)."""
    from lrptext.kernels import native

    x_shape, w_shape, stride, padding, dilation, groups = case
    x, w = make(x_shape, dtype, "cpu", 100), make(w_shape, dtype, "cpu", 101)
    b = make((w_shape[0],), dtype, "cpu", 102)
    spec = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    with core_threads(threads), core_winograd(winograd):
        out, no_bias = native.conv2d_forward(x, w, b, **spec), native.conv2d_forward(x, w, None, **spec)
    expected = F.conv2d(x.double(), w.double(), b.double(), **spec)
    assert out.dtype == dtype and out.shape == expected.shape
    assert_matches(out, expected.numpy(), dtype)
    assert_matches(no_bias, (expected - b.double()[:, None, None]).numpy(), dtype)


@pytest.mark.parametrize("layer", ["dense", "conv"])
@pytest.mark.parametrize("rule_name", ["epsilon", "flat", "wsquare", "gamma", "zbox"])
def test_a_relevance_buffer_handed_over_is_divided_in_place(rule_name, layer, device):
    """relevance_writable (the engine's own relevance, dead after the layer): epsilon and w^2/flat write R/st(z)
    into it instead of a fresh buffer, with the same result; the other rules leave it as it was."""
    from lrptext.kernels import native

    rule, _ = RULES[rule_name]
    if layer == "dense":
        x, w, b = make((5, 12), torch.float64, device, 110), make((7, 12), torch.float64, device, 111), None
        z, spec, kernel = x @ w.T, {}, native.dense
    else:
        x, w = make((2, 3, 6, 5), torch.float64, device, 110), make((4, 3, 3, 3), torch.float64, device, 111)
        b, spec, kernel = make((4,), torch.float64, device, 112), {"stride": (1, 1), "padding": (1, 1),
                                                                 "dilation": (1, 1), "groups": 1}, native.conv2d
        z = F.conv2d(x, w, b, padding=1)
    r = make(tuple(z.shape), torch.float64, device, 113)
    prepared = prepare_weights(rule, w, backend="cpp")
    common = {"rule": rule, "z": z if isinstance(rule, (Epsilon, Gamma)) else None, "reduce_channels": False,
              "check_finite": True, "prepared": (prepared.weight_a, prepared.weight_b), **spec}
    expected = kernel(x, w, b, r, **common)
    handed = r.clone()
    out = kernel(x, w, b, handed, relevance_writable=True, **common)
    torch.testing.assert_close(out, expected)
    assert torch.equal(handed, r) == (rule_name in ("gamma", "zbox"))
    with pytest.raises(ValueError, match="'relevance' shares memory with 'z'"):
        kernel(x, w, b, z, relevance_writable=True, **(common | {"z": z}))


@pytest.mark.parametrize("writable", [False, True])
@pytest.mark.parametrize("layer", ["dense", "conv", "winograd"])
def test_gamma_over_chunks_of_samples_equals_gamma_sample_by_sample(layer, writable):
    """gamma takes a large batch in chunks of samples (about 2^20 outputs each: 256 samples of 4,096 here, so three
    chunks), with R after a ReLU (zero where z <= 0: one branch), whose buffer, when handed over, takes the
    quotient: the same as each sample alone; also by Winograd's F(2x2, 3x3), whose weights are transformed once for
    all chunks."""
    from lrptext.kernels import native

    rule, _ = RULES["gamma"]
    if layer == "dense":
        x, w, b = make((600, 6), torch.float64, "cpu", 130), make((4096, 6), torch.float64, "cpu", 131), None
        spec, kernel = {}, native.dense
        z = x @ w.T
    else:
        x, w = make((600, 2, 8, 8), torch.float64, "cpu", 130), make((64, 2, 3, 3), torch.float64, "cpu", 131)
        b, spec, kernel = make((64,), torch.float64, "cpu", 132), {"stride": (1, 1), "padding": (1, 1),
                                                                  "dilation": (1, 1), "groups": 1}, native.conv2d
        z = F.conv2d(x, w, b, padding=1)
    r = make(tuple(z.shape), torch.float64, "cpu", 133).abs() * (z > 0)
    prepared = prepare_weights(rule, w, backend="cpp")
    common = {"rule": rule, "reduce_channels": False, "check_finite": True,
              "prepared": (prepared.weight_a, prepared.weight_b), **spec}
    handed = r.clone()
    with core_winograd("always" if layer == "winograd" else "never"):
        out = kernel(x, w, b, handed, z=z, relevance_writable=writable, **common)
        alone = torch.cat([kernel(x[i:i + 1], w, b, r[i:i + 1], z=z[i:i + 1], **common) for i in range(len(x))])
    if layer == "winograd":  # other blocks of tiles: other GEMM shapes
        assert relative_error(out, alone) < 1e-12
    else:
        torch.testing.assert_close(out, alone, rtol=1e-12, atol=1e-15)
    assert torch.equal(handed, r) != writable


# Layers whose input relu_input reads: (input shape, weight shape, conv arguments or None for dense). The conv
# cases take each way the core gathers columns: a "same" grid, a strided walk, a 1x1 convolution (otherwise read
# in place), and small images side by side in one tile; and Winograd's input transform.
RELU_INPUT_LAYERS = {
    "dense": ((5, 12), (7, 12), None),
    "conv": ((2, 3, 6, 5), (4, 3, 3, 3), {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1}),
    "strided": ((2, 3, 7, 6), (4, 3, 3, 3), {"stride": (2, 2), "padding": (1, 0), "dilation": (1, 1), "groups": 1}),
    "1x1": ((2, 5, 4, 3), (6, 5, 1, 1), {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}),
    "small images": ((9, 2, 4, 4), (3, 2, 3, 3), {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1),
                                                  "groups": 1}),
    "winograd": ((3, 4, 9, 7), (5, 4, 3, 3), {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1),
                                              "groups": 1}),
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("reduce", [False, True])
@pytest.mark.parametrize("layer", list(RELU_INPUT_LAYERS))
@pytest.mark.parametrize("rule_name", ["epsilon", "gamma", "zplus", "alpha2beta1"])
def test_rules_read_relu_of_a_pre_activation(rule_name, layer, reduce, threads, device):
    """relu_input (the engine's conv -> ReLU -> conv with the ReLU not kept): a rule on a pre-activation with
    relu_input is the rule on relu(pre-activation), with and without the sum over input channels, with z given
    and computed by the kernel."""
    from lrptext.kernels import native

    if device == "cuda" and (threads == 2 or layer == "winograd"):
        pytest.skip("threads and Winograd are CPU settings; CUDA runs each case once, at threads=1, 'conv'")
    rule, _ = RULES[rule_name]
    x_shape, w_shape, spec = RELU_INPUT_LAYERS[layer]
    a, w = make(x_shape, torch.float64, device, 120), make(w_shape, torch.float64, device, 121)
    if spec is None:
        b, kernel, z = None, native.dense, a.relu() @ w.T
    else:
        b, kernel = make(w_shape[:1], torch.float64, device, 122), native.conv2d
        z = F.conv2d(a.relu(), w, b, **spec)
    r = make(tuple(z.shape), torch.float64, device, 123)
    prepared = prepare_weights(rule, w, backend="cpp")
    common = {"rule": rule, "reduce_channels": reduce, "check_finite": True,
              "prepared": (prepared.weight_a, prepared.weight_b), **(spec or {})}
    with core_threads(threads), core_winograd("always" if layer == "winograd" else "never"):
        for given in (z, None):
            out = kernel(a, w, b, r, z=given, relu_input=True, **common)
            torch.testing.assert_close(out, kernel(a.relu(), w, b, r, z=given, **common), rtol=0, atol=0)
        assert not torch.equal(out, kernel(a, w, b, r, z=None, **common))


@pytest.mark.parametrize("layer", ["dense", "conv"])
@pytest.mark.parametrize("rule", ["flat", "wsquare", "zbox"])
def test_relu_input_is_refused_by_rules_that_do_not_read_the_input_alone(rule, layer):
    from lrptext import _core

    x_shape, w_shape, spec = RELU_INPUT_LAYERS[layer]
    out_shape = (x_shape[0], w_shape[0]) if spec is None else (x_shape[0], w_shape[0]) + x_shape[2:]
    args = (np.zeros(x_shape), np.ones(w_shape), None, np.ones(out_shape), np.empty(x_shape))
    call = _core.dense_relevance if spec is None else _core.conv_relevance
    bounds = {"low": np.zeros(x_shape[1]), "high": np.ones(x_shape[1])} if rule == "zbox" else {}
    with pytest.raises(ValueError, match=f"'relu_input' applies to the rules that read the input .*got '{rule}'"):
        call(*args, rule=rule, relu_input=True, **bounds, **(spec or {}))


@pytest.mark.parametrize("rule_name", ["epsilon", "zplus"])
def test_conv_with_a_weight_larger_than_the_cache(rule_name):
    """A weight of more than 2^20 floats gets tiles of at least 1,024 positions: 1,296 positions split in two."""
    rule, _ = RULES[rule_name]
    x = make((1, 256, 36, 36), torch.float64, "cpu", 64, positive=True)
    w, b = make((512, 256, 3, 3), torch.float64, "cpu", 65), make((512,), torch.float64, "cpu", 66)
    assert w.numel() > 2**20
    r = make((1, 512, 36, 36), torch.float64, "cpu", 67)
    out = conv2d_relevance(x, w, b, r, padding=1, rule=rule, backend="cpp")
    expected = conv2d_relevance(x, w, b, r, padding=1, rule=rule, backend="torch")
    # sums of 2,304 terms divided by z near 0 (epsilon): rounding differences scale with the largest value
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9 * float(expected.abs().max()))


@pytest.mark.parametrize("rule_name", RULES)
def test_a_wrong_rule_does_not_match(rule_name, backend):
    """The suite can fail: every rule differs from the oracle of another rule on the same data."""
    rule, _ = RULES[rule_name]
    other = "gamma" if rule_name.startswith("epsilon") else "epsilon"
    x, w, b, r = (make(s, torch.float64, "cpu", 5 + i) for i, s in enumerate([(4, 12), (7, 12), (7,), (4, 7)]))
    out = dense_relevance(x, w, b, r, rule=rule, backend=backend)
    expected = reference.dense(x.numpy(), w.numpy(), b.numpy(), r.numpy(), RULES[other][1])
    assert relative_error(out, expected) > 1e-2


CONSERVING = ["epsilon", "gamma", "zplus", "alpha2beta1", "zbox", "wsquare", "flat"]


@pytest.mark.parametrize("rule_name", CONSERVING)
def test_conservation_without_bias(rule_name, backend):
    """Without biases every rule conserves relevance: Σ R_in = Σ R_out (up to the stabiliser)."""
    rule, _ = RULES[rule_name]
    x = make((3, 4, 9, 8), torch.float64, "cpu", 21)
    w = make((5, 4, 3, 3), torch.float64, "cpu", 22)
    r = F.conv2d(x, w, None, padding=1).clamp(min=0)  # relevance of a ReLU layer
    out = conv2d_relevance(x, w, None, r, padding=1, rule=rule, backend=backend)
    np.testing.assert_allclose(out.sum(dim=(1, 2, 3)), r.sum(dim=(1, 2, 3)), rtol=1e-5)
    xd, wd = make((6, 30), torch.float64, "cpu", 23), make((10, 30), torch.float64, "cpu", 24)
    rd = (xd @ wd.T).clamp(min=0)
    outd = dense_relevance(xd, wd, None, rd, rule=rule, backend=backend)
    np.testing.assert_allclose(outd.sum(dim=1), rd.sum(dim=1), rtol=1e-5)


@pytest.mark.parametrize("rule_name", ["epsilon", "gamma", "zplus", "zbox", "flat"])
def test_reduce_channels_is_the_channel_sum(rule_name, backend, device):
    rule, _ = RULES[rule_name]
    x = make((2, 6, 13), torch.float64, device, 31)
    w, b = make((4, 6, 3), torch.float64, device, 32), make((4,), torch.float64, device, 33)
    r = make((2, 4, 11), torch.float64, device, 34)
    full = conv1d_relevance(x, w, b, r, rule=rule, backend=backend)
    reduced = conv1d_relevance(x, w, b, r, rule=rule, backend=backend, reduce_channels=True)
    assert reduced.shape == (2, 13)
    torch.testing.assert_close(reduced, full.sum(1))
    xd = make((2, 3, 6), torch.float64, device, 35)
    wd, rd = make((5, 6), torch.float64, device, 36), make((2, 3, 5), torch.float64, device, 37)
    torch.testing.assert_close(dense_relevance(xd, wd, None, rd, rule=rule, backend=backend, reduce_channels=True),
                               dense_relevance(xd, wd, None, rd, rule=rule, backend=backend).sum(-1))


@pytest.mark.parametrize("rule_name", ["epsilon", "gamma"])
def test_forward_z_is_used(rule_name, backend):
    rule, _ = RULES[rule_name]
    x, w, b, r = (make(s, torch.float64, "cpu", 40 + i) for i, s in enumerate([(3, 8), (5, 8), (5,), (3, 5)]))
    z = x @ w.T + b
    plain = dense_relevance(x, w, b, r, rule=rule, backend=backend)
    torch.testing.assert_close(dense_relevance(x, w, b, r, rule=rule, z=z, backend=backend), plain)
    assert not torch.allclose(dense_relevance(x, w, b, r, rule=rule, z=z + 3.0, backend=backend), plain)


@pytest.mark.parametrize("rule_name", RULES)
def test_prepared_weights_give_the_same_result(rule_name, backend, device):
    rule, _ = RULES[rule_name]
    x = make((2, 3, 7, 6), torch.float32, device, 50)
    w, b = make((4, 3, 3, 3), torch.float32, device, 51), make((4,), torch.float32, device, 52)
    r = make((2, 4, 5, 4), torch.float32, device, 53)
    prepared = prepare_weights(rule, w, backend=backend)
    torch.testing.assert_close(conv2d_relevance(x, w, b, r, rule=rule, prepared=prepared, backend=backend),
                               conv2d_relevance(x, w, b, r, rule=rule, backend=backend))


def test_prepared_weights_must_match_the_rule():
    w = torch.randn(3, 4)
    prepared = prepare_weights(Gamma(0.25), w)
    with pytest.raises(ValueError, match="was made for Gamma"):
        dense_relevance(torch.randn(2, 4), w, None, torch.randn(2, 3), rule=Gamma(0.5), prepared=prepared)


def test_numpy_in_numpy_out(backend):
    rng = np.random.default_rng(0)
    x, w, r = rng.normal(size=(3, 6)), rng.normal(size=(4, 6)), rng.normal(size=(3, 4))
    out = dense_relevance(x, w, None, r, rule=Gamma(), backend=backend)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    assert_matches(out, reference.dense(x, w, None, r, RULES["gamma"][1]), torch.float64)


def test_negative_free_input_takes_the_short_path_with_the_same_result(backend):
    """After a ReLU the input has no negative part; the kernels skip the x⁻ passes, and must agree with the oracle."""
    x = make((4, 20), torch.float64, "cpu", 60, positive=True)
    w, b = make((9, 20), torch.float64, "cpu", 61), make((9,), torch.float64, "cpu", 62)
    r = make((4, 9), torch.float64, "cpu", 63)
    for name in ("gamma", "zplus", "alpha2beta1"):
        rule, spec = RULES[name]
        assert_matches(dense_relevance(x, w, b, r, rule=rule, backend=backend),
                       reference.dense(x.numpy(), w.numpy(), b.numpy(), r.numpy(), spec), torch.float64)


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_single_sign_anywhere_in_a_large_layer_is_found(where, backend):
    """Gamma skips the branch of negative z when no relevance reaches one, and z+ skips x- when x >= 0: both
    decided by a parallel scan in chunks that stops early. One negative z with relevance, or one negative input,
    at the start, the middle or the end of 128,000 outputs must still be found (the torch backend decides nothing)."""
    x = make((64, 300), torch.float64, "cpu", 70, positive=True)
    w, b = make((2000, 300), torch.float64, "cpu", 71), make((2000,), torch.float64, "cpu", 72)
    z = F.linear(x, w, b)
    r = z.clamp(min=0)  # after a ReLU: no relevance where z <= 0
    i = {"first": 0, "middle": z.numel() // 2 + 7, "last": z.numel() - 1}[where]
    z.view(-1)[i], r.view(-1)[i] = -1.0, 0.5
    x.view(-1)[i % x.numel()] = -0.5
    for rule in (Gamma(0.25), ZPlus()):
        out = dense_relevance(x, w, b, r, z=z if isinstance(rule, Gamma) else None, rule=rule, backend=backend)
        expected = dense_relevance(x, w, b, r, z=z if isinstance(rule, Gamma) else None, rule=rule, backend="torch")
        torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-12)
    masked = r.clone()
    masked.view(-1)[i] = 0.0  # without it, the negative branch contributes nothing: the scan's answer matters
    assert not torch.allclose(dense_relevance(x, w, b, masked, z=z, rule=Gamma(0.25), backend="torch"),
                              dense_relevance(x, w, b, r, z=z, rule=Gamma(0.25), backend="torch"))


@pytest.mark.parametrize("rule_name", ["epsilon", "gamma", "alpha2beta1", "zbox", "wsquare", "flat"])
@pytest.mark.parametrize("shape", [(5, 17, 9), (1, 3, 2)], ids=["rows", "one-row"])
def test_dense_accumulate_adds_to_the_output(rule_name, shape):
    """accumulate=True (the engine's sum of what several layers send to one input): out + the relevance, which the
    call with a fresh output computed; gamma with nothing to pass (R = 0 everywhere) adds nothing."""
    from lrptext import _core

    rule, _ = RULES[rule_name]
    n, fi, fo = shape
    x, w, b, r = (make(s, torch.float64, "cpu", seed) for seed, s in enumerate(((n, fi), (fo, fi), (fo,), (n, fo))))
    extra = bounds(rule, fi)
    fresh = dense_relevance(x, w, b, r, rule=rule)
    args = {"rule": rule.kernel, **rule.kernel_args(), **extra}
    before = make((n, fi), torch.float64, "cpu", 9)
    out = before.clone()
    _core.dense_relevance(x, w, b, r.clone(), out, accumulate=True, **args)
    torch.testing.assert_close(out, before + fresh, rtol=1e-12, atol=1e-12)
    if rule_name == "gamma":
        out = before.clone()
        _core.dense_relevance(x, w, b, torch.zeros_like(r), out, accumulate=True, **args)
        assert torch.equal(out, before)
    with pytest.raises(ValueError, match="'accumulate' .* does not combine with reduce_channels"):
        _core.dense_relevance(x, w, b, r, torch.zeros(n, dtype=torch.float64), accumulate=True,
                              reduce_channels=True, **args)
