"""explain()'s forward pass computes CPU max pooling over windows that tile the input by element-wise maxima
(lrptext.engine.block_max_pool); it must give torch's values exactly and leave every other pooling to torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lrptext.engine.block_max_pool import block_max_pool

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


def settings(kernel, stride, **extra):
    return {"kernel_size": kernel, "stride": stride, "padding": 0, "dilation": 1, "ceil_mode": False, **extra}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", TILED, ids=[str(c[:3]) for c in TILED])
def test_tiling_windows_give_torchs_values(case, dtype):
    shape, dims, kernel, stride = case
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(dtype)
    x.view(-1)[5] = float("nan")  # propagated like max_pool
    x.view(-1)[1] = float("inf")
    pooled = block_max_pool(x, dims, settings(kernel, stride))
    expected = (F.max_pool1d if dims == 1 else F.max_pool2d)(x, kernel, stride)
    assert pooled.shape == expected.shape and pooled.dtype == expected.dtype
    torch.testing.assert_close(pooled, expected, rtol=0, atol=0, equal_nan=True)
    assert pooled.data_ptr() != x.data_ptr()  # a new tensor, as torch's, even for 1x1 windows


@pytest.mark.parametrize("extra", [
    {"kernel": 3, "stride": 2}, {"kernel": 2, "stride": 1}, {"kernel": 2, "stride": 2, "padding": 1},
    {"kernel": 2, "stride": 2, "dilation": 2}, {"kernel": 2, "stride": 2, "ceil_mode": True},
    {"kernel": 2, "stride": 2, "return_indices": True}, {"kernel": 5, "stride": 5},
], ids=["overlapping", "stride-1", "padding", "dilation", "ceil-mode", "indices", "window-larger-than-input"])
def test_other_poolings_are_left_to_torch(extra):
    x = torch.randn(2, 3, 4, 4)
    kernel, stride = extra.pop("kernel"), extra.pop("stride")
    assert block_max_pool(x, 2, settings(kernel, stride) | extra) is None


def test_only_cpu_floating_tensors():
    assert block_max_pool(torch.ones(2, 3, 4, 4, dtype=torch.int64), 2, settings(2, None)) is None
    assert block_max_pool(torch.ones(3, 4), 2, settings(2, None)) is None  # too few dimensions for 2-D pooling
