"""Max pooling's forward pass on CPU for windows without padding or dilation. torch's CPU max_pool2d on NCHW
tensors is several times slower than element-wise maxima of strided views, and on small inputs it wakes its thread
pool (docs/performance.md). The C++ core computes any such windows on one pass over the input; without it, windows
that tile the input are strided maxima. The values are the same: a maximum is exact, and both propagate NaN as
max_pool does.
"""

from __future__ import annotations

from typing import Any

import torch

from lrptext.kernels import native


def per_axis(v: Any, dims: int) -> tuple[int, ...]:
    """A pooling setting (one int for every axis, or one per axis) as one per axis."""
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * dims


def max_pool(x: torch.Tensor, dims: int, settings: dict[str, Any], core: bool) -> torch.Tensor | None:
    """max_pool{dims}d(x, **settings) for windows without padding or dilation on the CPU, by the C++ core when
    `core`, else when the windows tile x; None when torch should compute it."""
    if x.device.type != "cpu" or not x.is_floating_point() or x.dim() not in (dims + 1, dims + 2):
        return None
    kernel = per_axis(settings["kernel_size"], dims)
    stride = per_axis(settings.get("stride") or settings["kernel_size"], dims)
    dilation = per_axis(settings.get("dilation", 1), dims)
    if (any(per_axis(settings.get("padding", 0), dims)) or any(d != 1 for d in dilation) or settings.get("ceil_mode")
            or settings.get("return_indices")):
        return None
    sizes = x.shape[-dims:]
    if any(n < k for n, k in zip(sizes, kernel)):
        return None  # torch raises its own error for an output of size 0
    if core:
        return _core_max_pool(x, dims, kernel, stride)
    return _strided_maxima(x, dims, kernel) if kernel == stride else None


def _core_max_pool(x: torch.Tensor, dims: int, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """Every plane (the leading dimensions flattened; a 1-d pooling's as planes of height 1) in one core call."""
    lead = x.shape[:-dims]
    planes = x.contiguous().reshape((-1,) + (1,) * (2 - dims) + tuple(x.shape[-dims:]))
    out = native.max_pool_forward(planes, kernel=(1,) * (2 - dims) + kernel, stride=(1,) * (2 - dims) + stride)
    return out.reshape(lead + out.shape[-dims:])


def _strided_maxima(x: torch.Tensor, dims: int, kernel: tuple[int, ...]) -> torch.Tensor:
    if all(k == 1 for k in kernel):
        return x.clone()
    out = x
    # Height first: its windows are pairs of whole rows, read contiguously; the width then works on fewer values.
    for axis, k in enumerate(kernel, start=-dims):
        n = out.shape[axis] // k
        out = out.narrow(axis, 0, n * k).unflatten(axis, (n, k))  # axis now indexes the position in the window
        pooled = out.select(axis, 0)
        for j in range(1, k):
            pooled = torch.maximum(pooled, out.select(axis, j))
        out = pooled
    return out
