"""explain()'s forward pass computes CPU max pooling over windows without padding or dilation itself
(lrptext.layers.max_pool): in the C++ core, or, without it, windows that tile the input by element-wise maxima.
It must give torch's values exactly and leave every other pooling to torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lrptext.layers.max_pool import max_pool

TILED = [  # (input shape, spatial dims, kernel_size, stride)
    ((2, 3, 8, 8), 2, 2, None),
    ((2, 3, 9, 7), 2, 2, 2),  # floor mode drops the last row and column
    ((2, 3, 8, 9), 2, (2, 3), None),
    ((3, 6, 6), 2, 3, 3),  # unbatched
    ((2, 3, 6, 5), 2, (1, 2), (1, 2)),
    ((2, 3, 4, 4), 2, 1, None),
    ((2, 4, 11), 1, 3, None),
    ((4, 10), 1, 2, 2),
]
OVERLAPPING = [  # windows that do not tile the input: the core's, torch's without it
    ((2, 3, 9, 8), 2, 3, 2),
    ((2, 3, 7, 7), 2, 2, 1),
    ((2, 3, 6, 9), 2, (2, 3), (1, 2)),
    ((2, 4, 11), 1, 4, 3),
]


def settings(kernel, stride, **extra):
    return {"kernel_size": kernel, "stride": stride, "padding": 0, "dilation": 1, "ceil_mode": False, **extra}


def case_input(shape, dtype):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(dtype)
    x.view(-1)[5] = float("nan")  # propagated like max_pool
    x.view(-1)[1] = float("inf")
    x.view(-1)[-1] = float("-inf")
    return x


@pytest.mark.parametrize("core", [True, False], ids=["core", "strided"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", TILED + OVERLAPPING, ids=[str(c[:3]) for c in TILED + OVERLAPPING])
def test_windows_give_torchs_values(case, dtype, core):
    shape, dims, kernel, stride = case
    x = case_input(shape, dtype)
    pooled = max_pool(x, dims, settings(kernel, stride), core)
    if not core and case in OVERLAPPING:
        assert pooled is None
        return
    expected = (F.max_pool1d if dims == 1 else F.max_pool2d)(x, kernel, stride)
    assert pooled.shape == expected.shape and pooled.dtype == expected.dtype
    torch.testing.assert_close(pooled, expected, rtol=0, atol=0, equal_nan=True)
    assert pooled.data_ptr() != x.data_ptr()  # a new tensor, as torch's, even for 1x1 windows


def test_a_non_contiguous_input_in_the_core():
    x = case_input((2, 8, 6, 3), torch.float32).permute(0, 3, 1, 2)
    torch.testing.assert_close(max_pool(x, 2, settings(2, None), True), F.max_pool2d(x, 2), equal_nan=True)


@pytest.mark.parametrize("core", [True, False], ids=["core", "strided"])
@pytest.mark.parametrize("extra", [
    {"kernel": 2, "stride": 2, "padding": 1}, {"kernel": 2, "stride": 2, "dilation": 2},
    {"kernel": 2, "stride": 2, "ceil_mode": True}, {"kernel": 2, "stride": 2, "return_indices": True},
    {"kernel": 5, "stride": 5},
], ids=["padding", "dilation", "ceil-mode", "indices", "window-larger-than-input"])
def test_other_poolings_are_left_to_torch(extra, core):
    x, extra = torch.randn(2, 3, 4, 4), dict(extra)
    kernel, stride = extra.pop("kernel"), extra.pop("stride")
    assert max_pool(x, 2, settings(kernel, stride) | extra, core) is None


@pytest.mark.parametrize("core", [True, False], ids=["core", "strided"])
def test_only_cpu_floating_tensors(core):
    assert max_pool(torch.ones(2, 3, 4, 4, dtype=torch.int64), 2, settings(2, None), core) is None
    assert max_pool(torch.ones(3, 4), 2, settings(2, None), core) is None  # too few dimensions for 2-D pooling
