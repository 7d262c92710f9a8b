"""Embedding, embedding-bag and pooling kernels against the float64 oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reference
from core_settings import core_threads
from lrptext import kernels as K
from tolerances import assert_matches


def rand(shape, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(device)


@pytest.mark.parametrize("id_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("reduce", [True, False])
@pytest.mark.parametrize("padding_idx", [None, 0, -1])
def test_embedding(reduce, padding_idx, id_dtype, dtype, backend, device):
    ids = torch.tensor([[0, 3, 5, 9, 0], [2, 9, 9, 1, 4]], dtype=id_dtype, device=device)
    r = rand((2, 5, 6), dtype, device, 1)
    out = K.embedding_relevance(ids, r, num_embeddings=10, padding_idx=padding_idx, reduce=reduce, backend=backend)
    pad = None if padding_idx is None else padding_idx % 10
    expected = reference.embedding(ids.cpu().numpy(), r.cpu().numpy(), pad)
    if reduce:
        assert out.shape == ids.shape
        assert_matches(out, expected, dtype)
    else:
        assert out.shape == r.shape
        assert_matches(out.sum(-1), expected, dtype)


BAGS = [
    # ids, offsets (an empty bag included), per-sample weights
    ([4, 1, 7, 7, 0, 2, 9, 3], [0, 3, 3, 6], None),
    ([1, 2, 3, 4, 5, 6], [0, 1, 4], [0.5, 2.0, -1.0, 1.0, 3.0, 0.25]),
]


@pytest.mark.parametrize("mode", ["mean", "sum"])
@pytest.mark.parametrize("padding_idx", [None, 7])
@pytest.mark.parametrize("bag", BAGS, ids=["empty-bag", "weighted"])
def test_embedding_bag(bag, mode, padding_idx, dtype, backend, device):
    ids_list, offsets_list, psw_list = bag
    if mode == "mean" and psw_list is not None:
        psw_list = None
    ids = torch.tensor(ids_list, device=device)
    offsets = torch.tensor(offsets_list, device=device)
    weight = rand((10, 5), dtype, device, 2)
    psw = None if psw_list is None else torch.tensor(psw_list, dtype=dtype, device=device)
    r = rand((len(offsets_list), 5), dtype, device, 3)
    out = K.embedding_bag_relevance(ids, weight, r, offsets=offsets, mode=mode, per_sample_weights=psw,
                                    padding_idx=padding_idx, backend=backend)
    expected = reference.embedding_bag(ids_list, offsets_list, weight.cpu().numpy(), r.cpu().numpy(), mode=mode,
                                       per_sample_weights=psw_list, padding_idx=padding_idx)
    assert out.shape == ids.shape
    assert_matches(out, expected, dtype)


@pytest.mark.parametrize("mode", ["mean", "sum"])
@pytest.mark.parametrize("padding_idx", [None, 7])
@pytest.mark.parametrize("bag", BAGS, ids=["empty-bag", "weighted"])
def test_embedding_bag_given_the_forward_output(bag, mode, padding_idx, dtype, backend, device):
    """With the bag output y of torch's forward pass given (as the engine does), the denominators come from it and
    each row is read once: the oracle's relevance, whose y is summed in float64."""
    ids_list, offsets_list, psw_list = bag
    if mode == "mean":
        psw_list = None
    ids = torch.tensor(ids_list, device=device)
    offsets = torch.tensor(offsets_list, device=device)
    weight = rand((10, 5), dtype, device, 2)
    psw = None if psw_list is None else torch.tensor(psw_list, dtype=dtype, device=device)
    r = rand((len(offsets_list), 5), dtype, device, 3)
    y = F.embedding_bag(ids, weight, offsets, mode=mode, per_sample_weights=psw, padding_idx=padding_idx)
    out = K.embedding_bag_relevance(ids, weight, r, offsets=offsets, mode=mode, per_sample_weights=psw, output=y,
                                    padding_idx=padding_idx, backend=backend)
    expected = reference.embedding_bag(ids_list, offsets_list, weight.cpu().numpy(), r.cpu().numpy(), mode=mode,
                                       per_sample_weights=psw_list, padding_idx=padding_idx)
    assert_matches(out, expected, dtype)


def test_embedding_bag_takes_the_denominators_from_the_given_output(dtype, backend, device):
    """An output other than the bags' sums shows that it is read, not summed again: the oracle with that y."""
    ids_list, offsets_list = [4, 1, 7, 7, 0, 2, 9, 3], [0, 3, 3, 6]
    weight = rand((10, 5), dtype, device, 2)
    r = rand((4, 5), dtype, device, 3)
    other = rand((4, 5), dtype, device, 6)
    out = K.embedding_bag_relevance(torch.tensor(ids_list, device=device), weight, r,
                                    offsets=torch.tensor(offsets_list, device=device), mode="mean", output=other,
                                    backend=backend)
    expected = reference.embedding_bag(ids_list, offsets_list, weight.cpu().numpy(), r.cpu().numpy(), mode="mean",
                                       output=other.cpu().numpy())
    summed = reference.embedding_bag(ids_list, offsets_list, weight.cpu().numpy(), r.cpu().numpy(), mode="mean")
    assert np.abs(expected - summed).max() > 0.1 * np.abs(expected).max()  # the two answers tell y apart
    assert_matches(out, expected, dtype)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("given_output", [False, True], ids=["summed", "given-output"])
@pytest.mark.parametrize("mode, weighted", [("mean", False), ("sum", True)])
def test_embedding_bag_large_enough_to_split_over_threads(mode, weighted, given_output, threads):
    """Enough tokens (x dimensions) to run over several threads, bags of 0-300 tokens (longer and shorter than the
    rows fetched ahead and not a multiple of the four read together), ids repeating and padding among them; with
    the bags' outputs summed by the kernel or given from torch's forward pass."""
    g = torch.Generator().manual_seed(5)
    sizes = torch.randint(0, 300, (24,), generator=g)
    sizes[3] = 0
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)[:-1]])
    ids = torch.randint(0, 50, (int(sizes.sum()),), generator=g)
    weight = torch.randn(50, 40, generator=g)
    psw = torch.rand(len(ids), generator=g) if weighted else None
    r = torch.randn(len(sizes), 40, generator=g)
    assert len(ids) * 40 >= 2**16  # the core's threshold to split (kParallelGrain)
    y = F.embedding_bag(ids, weight, offsets, mode=mode, per_sample_weights=psw, padding_idx=7)
    y = y if given_output else None
    with core_threads(threads):
        out = K.embedding_bag_relevance(ids, weight, r, offsets=offsets, mode=mode, per_sample_weights=psw, output=y,
                                        padding_idx=7, backend="cpp")
    expected = reference.embedding_bag(ids.tolist(), offsets.tolist(), weight.numpy(), r.numpy(), mode=mode,
                                       per_sample_weights=None if psw is None else psw.tolist(), padding_idx=7)
    assert_matches(out, expected, torch.float32)


def test_embedding_bag_2d_and_conservation(backend):
    """Fixed-size bags as a 2-D id tensor; the split conserves each bag's relevance."""
    ids = torch.tensor([[1, 2, 3], [4, 4, 0]])
    weight = rand((6, 4), torch.float64, "cpu", 4).abs() + 0.1
    bag = torch.nn.EmbeddingBag.from_pretrained(weight, mode="mean")
    y = bag(ids)
    out = K.embedding_bag_relevance(ids, weight, y, mode="mean", stabilizer=1e-12, backend=backend)
    assert out.shape == ids.shape
    torch.testing.assert_close(out.sum(1), y.sum(1), rtol=1e-6, atol=1e-9)


POOLS = [
    # (function, kwargs, oracle kwargs, torch forward)
    # windows inside the input without padding or dilation (the CPU's plain path), disjoint and overlapping
    (K.max_pool2d_relevance, dict(kernel_size=2), dict(mode="max", kernel=(2, 2), stride=(2, 2)),
     lambda x: F.max_pool2d(x, 2)),
    (K.max_pool2d_relevance, dict(kernel_size=(3, 2), stride=(2, 1)), dict(mode="max", kernel=(3, 2), stride=(2, 1)),
     lambda x: F.max_pool2d(x, (3, 2), (2, 1))),
    (K.max_pool2d_relevance, dict(kernel_size=(3, 2)), dict(mode="max", kernel=(3, 2), stride=(3, 2)),
     lambda x: F.max_pool2d(x, (3, 2))),
    (K.max_pool2d_relevance, dict(kernel_size=3, stride=2, padding=1),
     dict(mode="max", kernel=(3, 3), stride=(2, 2), padding=(1, 1)), lambda x: F.max_pool2d(x, 3, 2, 1)),
    (K.max_pool2d_relevance, dict(kernel_size=(2, 3), stride=1, dilation=2),
     dict(mode="max", kernel=(2, 3), dilation=(2, 2)), lambda x: F.max_pool2d(x, (2, 3), 1, 0, 2)),
    (K.avg_pool2d_relevance, dict(kernel_size=3, stride=2, padding=1),
     dict(mode="avg", kernel=(3, 3), stride=(2, 2), padding=(1, 1)), lambda x: F.avg_pool2d(x, 3, 2, 1)),
    (K.avg_pool2d_relevance, dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
     dict(mode="avg", kernel=(3, 3), stride=(2, 2), padding=(1, 1), count_include_pad=False),
     lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)),
    (K.avg_pool2d_relevance, dict(kernel_size=2, divisor_override=3),
     dict(mode="avg", kernel=(2, 2), stride=(2, 2), divisor_override=3),
     lambda x: F.avg_pool2d(x, 2, divisor_override=3)),
    (K.adaptive_avg_pool2d_relevance, {}, dict(mode="avg", adaptive=True), lambda x: F.adaptive_avg_pool2d(x, (3, 2))),
    (K.adaptive_max_pool2d_relevance, {}, dict(mode="max", adaptive=True), lambda x: F.adaptive_max_pool2d(x, (3, 2))),
]


@pytest.mark.parametrize("case", range(len(POOLS)))
def test_pool2d(case, dtype, backend, device):
    fn, kwargs, oracle, forward = POOLS[case]
    x = rand((2, 3, 7, 5), dtype, device, 5 + case).abs() + 0.05  # after a ReLU
    y = forward(x)
    r = rand(tuple(y.shape), dtype, device, 9)
    out = fn(x, r, backend=backend, **kwargs)
    expected, oracle_y = reference.pool2d(x.cpu().numpy(), r.cpu().numpy(), **oracle)
    # the oracle's windows are torch's
    assert_matches(oracle_y, y, torch.float64 if dtype == torch.float64 else torch.float32)
    assert_matches(out, expected, dtype)


@pytest.mark.parametrize("kind", ["max", "avg", "adaptive_avg", "adaptive_max"])
def test_pool1d(kind, dtype, backend, device):
    x = rand((2, 4, 11), dtype, device, 20).abs()
    window = dict(kernel_size=3, stride=2, padding=1, backend=backend)
    forward, call, oracle = {
        "max": (lambda v: F.max_pool1d(v, 3, 2, 1), lambda v, r: K.max_pool1d_relevance(v, r, **window),
                dict(mode="max", kernel=(1, 3), stride=(1, 2), padding=(0, 1))),
        "avg": (lambda v: F.avg_pool1d(v, 3, 2, 1), lambda v, r: K.avg_pool1d_relevance(v, r, **window),
                dict(mode="avg", kernel=(1, 3), stride=(1, 2), padding=(0, 1))),
        "adaptive_avg": (lambda v: F.adaptive_avg_pool1d(v, 4),
                         lambda v, r: K.adaptive_avg_pool1d_relevance(v, r, backend=backend),
                         dict(mode="avg", adaptive=True)),
        "adaptive_max": (lambda v: F.adaptive_max_pool1d(v, 4),
                         lambda v, r: K.adaptive_max_pool1d_relevance(v, r, backend=backend),
                         dict(mode="max", adaptive=True)),
    }[kind]
    y = forward(x)
    r = rand(tuple(y.shape), dtype, device, 21)
    out = call(x, r)
    expected, _ = reference.pool2d(x.cpu().numpy()[:, :, None], r.cpu().numpy()[:, :, None], **oracle)
    assert_matches(out, expected[:, :, 0], dtype)


@pytest.mark.parametrize("dim", [1, -1])
def test_global_max(dim, dtype, backend, device):
    x = rand((2, 5, 7), dtype, device, 30)
    r = rand((2, 7) if dim == 1 else (2, 5), dtype, device, 31)
    out = K.global_max_relevance(x, r, dim=dim, backend=backend)
    index = x.argmax(dim=dim, keepdim=True)
    expected = torch.zeros_like(x).scatter_(dim, index, r.unsqueeze(dim))
    assert_matches(out, expected, dtype)


def test_max_ties_go_to_the_first_maximum(backend):
    """Documented tie rule: the whole relevance goes to the first maximum in row-major window order."""
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    out = K.max_pool2d_relevance(x, torch.full((1, 1, 1, 1), 3.0, dtype=torch.float64), kernel_size=2, backend=backend)
    assert out.flatten().tolist() == [3.0, 0.0, 0.0, 0.0]
    seq = torch.tensor([[[1.0, 2.0, 2.0, 0.5]]], dtype=torch.float64)
    out = K.global_max_relevance(seq, torch.tensor([[1.0]], dtype=torch.float64), dim=-1, backend=backend)
    assert out.flatten().tolist() == [0.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("size", [(8, 6), (7, 5)], ids=["tiled", "remainder"])
def test_max_ties_in_two_by_two_windows(size, dtype, backend, device):
    """MaxPool2d(2) with many ties (values 0, 1, 2): every winner position of the CPU's branch-free 2x2 path, and
    remainder rows and columns, which no window covers, get nothing."""
    g = torch.Generator().manual_seed(40)
    x = torch.randint(0, 3, (2, 3, *size), generator=g).to(dtype).to(device)
    r = rand((2, 3, size[0] // 2, size[1] // 2), dtype, device, 41)
    out = K.max_pool2d_relevance(x, r, kernel_size=2, backend=backend)
    expected, _ = reference.pool2d(x.cpu().numpy(), r.cpu().numpy(), mode="max", kernel=(2, 2), stride=(2, 2))
    assert_matches(out, expected, dtype)


def test_average_pooling_conserves(backend):
    x = rand((2, 3, 8, 8), torch.float64, "cpu", 40).abs() + 0.1
    r = F.avg_pool2d(x, 2)
    out = K.avg_pool2d_relevance(x, r, kernel_size=2, stabilizer=1e-12, backend=backend)
    torch.testing.assert_close(out.sum(), r.sum())


def test_a_wrong_pooling_rule_does_not_match(backend):
    """The suite can fail: average-pooling relevance is not max-pooling relevance."""
    x = rand((1, 2, 6, 6), torch.float64, "cpu", 50).abs()
    r = rand((1, 2, 3, 3), torch.float64, "cpu", 51)
    out = K.avg_pool2d_relevance(x, r, kernel_size=2, backend=backend)
    expected, _ = reference.pool2d(x.numpy(), r.numpy(), mode="max", kernel=(2, 2), stride=(2, 2))
    assert np.abs(out.numpy() - expected).max() > 1e-2


def test_a_max_window_of_padding_only_is_refused(backend):
    """torch accepts this geometry, outputs -inf and its backward writes out of bounds; lrptext refuses it."""
    x = torch.zeros(1, 1, 1, 3, dtype=torch.float64)
    y = F.max_pool2d(x, 2, 1, 1, 2)
    assert torch.isinf(y).any()
    with pytest.raises(ValueError, match="covers only padding"):
        K.max_pool2d_relevance(x, torch.ones_like(y), kernel_size=2, stride=1, padding=1, dilation=2, backend=backend)


RELU_POOLS = [((2, 3, 8, 6), (2, 2), (2, 2)), ((2, 3, 9, 7), (3, 3), (3, 3)), ((2, 3, 9, 8), (3, 2), (2, 1))]


@pytest.mark.parametrize("case", RELU_POOLS, ids=["2x2", "3x3-remainder", "overlapping"])
@pytest.mark.parametrize("impl", ["native", "torch_backend"])
def test_max_pooling_of_relu_from_the_pre_activation(case, impl, dtype, device):
    """relu_input (the engine's conv -> ReLU -> max pool, the ReLU not kept): pooling z with relu_input gives the
    relevance of pooling relu(z), ties included: windows of z <= 0 pool zeros, and their first position wins."""
    from lrptext.kernels import dispatch, native, torch_backend

    shape, kernel, stride = case
    g = torch.Generator().manual_seed(60)
    z = (torch.randint(-3, 3, shape, generator=g) * 0.5).to(dtype)  # ties, and windows of negatives only
    z.view(-1)[:5] = -1.0
    r = rand((shape[0], shape[1], (shape[2] - kernel[0]) // stride[0] + 1, (shape[3] - kernel[1]) // stride[1] + 1),
             dtype, "cpu", 61)
    spec = dict(mode="max", kernel=kernel, stride=stride, padding=(0, 0), dilation=(1, 1), adaptive=False,
                count_include_pad=True, divisor_override=0, stabilizer=0.0, check_finite=True)
    module = native if impl == "native" else torch_backend
    out = dispatch.pool(module, z.to(device), r.to(device), relu_input=True, **spec).cpu()
    expected, _ = reference.pool2d(z.relu().numpy(), r.numpy(), mode="max", kernel=kernel, stride=stride)
    assert_matches(out, expected, dtype)
    assert not torch.equal(out, dispatch.pool(module, z.to(device), r.to(device), **spec).cpu())  # z itself: elsewhere


def test_relu_input_needs_plain_max_windows():
    from lrptext import _core

    x, out = torch.rand(2, 4, 4, dtype=torch.float64), torch.empty(2, 4, 4, dtype=torch.float64)
    for mode, padding, pooled in (("avg", 0, 2), ("max", 1, 3)):
        r = torch.rand(2, pooled, pooled, dtype=torch.float64)
        with pytest.raises(ValueError, match="'relu_input' needs max pooling without padding, dilation or adaptive"):
            _core.pool_relevance(x, r, out, mode=mode, kernel=(2, 2), stride=(2, 2), padding=(padding, padding),
                                 dilation=(1, 1), relu_input=True)
