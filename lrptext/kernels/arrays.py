"""The array types the kernels accept (torch tensors, numpy arrays) and how outputs are allocated in the
caller's framework, on the caller's device."""

from __future__ import annotations

from typing import Any, Union

import numpy as np
import torch

Array = Union[torch.Tensor, np.ndarray]


def check_array(fn: str, name: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{fn}: '{name}' must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}")


def contiguous(a: Array | None) -> Array | None:
    """A C-contiguous view or copy. Tensors are detached: the kernels never join an autograd graph (one that
    requires no gradient is used as it is: a detached alias is a new tensor object)."""
    if a is None:
        return None
    if isinstance(a, torch.Tensor):
        return a.detach().contiguous() if a.requires_grad else a.contiguous()
    return np.ascontiguousarray(a)


def contiguous_rows(a: Array) -> Array:
    """`a` itself when its last axis is contiguous and no stride is negative (the C++ attention kernel reads such
    strided heads in place, e.g. a [batch, heads, tokens, dim] view of [batch, tokens, heads, dim]), else a
    C-contiguous copy; tensors are detached as by contiguous()."""
    return _as_strided(a, contiguous_last=True)


def strided(a: Array) -> Array:
    """`a` itself when no stride is negative (read in place by the C++ attention kernel), else a C-contiguous copy."""
    return _as_strided(a, contiguous_last=False)


def _as_strided(a: Array, contiguous_last: bool) -> Array:
    if isinstance(a, torch.Tensor):
        a = a.detach() if a.requires_grad else a
        strides, unit = a.stride(), 1
    else:
        strides, unit = a.strides, a.itemsize
    rows_apart = a.ndim < 2 or a.shape[-2] == 1 or strides[-2] >= a.shape[-1] * unit  # BLAS's leading dimension
    if a.ndim and (rows_apart or not contiguous_last) and all(
            n == 1 or (s >= 0 and (i < a.ndim - 1 or not contiguous_last or s == unit))
            for i, (n, s) in enumerate(zip(a.shape, strides))):
        return a
    return contiguous(a)


def empty_like_rows(a: Array) -> Array:
    """A fresh array shaped like `a`, in `a`'s memory layout where it is dense (torch and numpy keep it), so that
    an output laid out like its operand is reshaped back without a copy."""
    return torch.empty_like(a) if isinstance(a, torch.Tensor) else np.empty_like(a)


def empty(like: Array, shape: tuple[int, ...]) -> Array:
    if isinstance(like, torch.Tensor):
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    return np.empty(shape, dtype=like.dtype)


def full_like_channels(like: Array, values: tuple[float, ...]) -> Array:
    """A 1-D array of per-channel values with `like`'s dtype and device."""
    if isinstance(like, torch.Tensor):
        return torch.tensor(values, dtype=like.dtype, device=like.device)
    return np.asarray(values, dtype=like.dtype)


def stream(a: Array) -> int | None:
    """The current CUDA stream of a CUDA tensor's device, so the kernels run in order with torch's work."""
    if isinstance(a, torch.Tensor) and a.is_cuda:
        return int(torch.cuda.current_stream(a.device).cuda_stream)
    return None


def to_torch(a: Array | None) -> torch.Tensor | None:
    if a is None or isinstance(a, torch.Tensor):
        return a
    return torch.from_numpy(np.ascontiguousarray(a))


def like_input(result: torch.Tensor, original: Array) -> Array:
    """Returns numpy when the caller passed numpy."""
    if isinstance(original, np.ndarray):
        return result.numpy()
    return result
