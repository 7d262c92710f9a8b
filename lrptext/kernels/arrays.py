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
