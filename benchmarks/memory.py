"""Peak memory of one call beyond what was held before it.

CPU: resident memory, from the kernel's high-water mark (VmHWM), reset just before the call (Linux's
/proc/self/clear_refs); run each method in a fresh process so no other method's allocations are counted.

GPU: two allocators are involved: torch's caching allocator (outputs of every method, lrptext's included, and all of
zennit's and the floor's memory) and the device's default stream-ordered pool, where lrptext's CUDA kernels take
their scratch (cudaMallocAsync). The pool's counters are read through the CUDA runtime torch has loaded; where
that fails only torch's part is counted, and the result says so."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import torch

import lrptext

USED_MEM_CURRENT, USED_MEM_HIGH = 7, 8  # cudaMemPoolAttr values in the CUDA runtime's header


class _DefaultPool:
    def __init__(self):
        self.runtime = None
        for name in ("libcudart.so.13", "libcudart.so.12", "libcudart.so"):
            try:
                self.runtime = ctypes.CDLL(name)
                break
            except OSError:
                continue
        self.pool = ctypes.c_void_p()
        if self.runtime is not None and self.runtime.cudaDeviceGetDefaultMemPool(
                ctypes.byref(self.pool), torch.cuda.current_device()) != 0:
            self.runtime = None
        if self.runtime is not None:
            try:  # a runtime without stream-ordered pools (or a refusal) leaves torch's count alone
                self.reset_high()
                self.read(USED_MEM_CURRENT)
            except (RuntimeError, AttributeError):
                self.runtime = None

    def read(self, attribute: int) -> int:
        value = ctypes.c_uint64()
        if self.runtime.cudaMemPoolGetAttribute(self.pool, attribute, ctypes.byref(value)) != 0:
            raise RuntimeError("cudaMemPoolGetAttribute failed")
        return value.value

    def reset_high(self) -> None:
        if self.runtime.cudaMemPoolSetAttribute(self.pool, USED_MEM_HIGH, ctypes.byref(ctypes.c_uint64(0))) != 0:
            raise RuntimeError("cudaMemPoolSetAttribute failed")


def cuda_peak_extra_bytes(fn: Callable[[], object]) -> tuple[int, bool]:
    """(peak bytes above the level before `fn()`, whether lrptext's scratch pool was counted too)."""
    pool = _DefaultPool()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    if pool.runtime:
        pool.reset_high()
        pool_before = pool.read(USED_MEM_CURRENT)
    result = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    if pool.runtime:
        peak += max(0, pool.read(USED_MEM_HIGH) - pool_before)
    del result
    return peak, pool.runtime is not None


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def cpu_peak_extra_bytes(fn: Callable[[], object]) -> int:
    """Peak resident bytes during `fn()` above the resident level before it (Linux)."""
    # Memory freed by earlier calls stays resident in malloc's arenas and in lrptext's kept workspaces, and a call
    # reusing it would look free of cost: hand it back to the system first, so the call's whole working set shows
    # as new pages.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    lrptext.release_workspaces()
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets the high-water mark to the current resident size
    before = _status_kib("VmRSS")
    result = fn()
    peak = _status_kib("VmHWM") - before
    del result
    return peak * 1024
