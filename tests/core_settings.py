"""The C++ core's process-wide settings (threads, Winograd), set for a block of a test and restored afterwards."""

from __future__ import annotations

import contextlib

import lrptext


@contextlib.contextmanager
def _setting(get, set_, value):
    """set_(value) for the block, then the value get() read before."""
    previous = get()
    set_(value)
    try:
        yield
    finally:
        set_(previous)


def core_threads(n: int):
    """The C++ core's thread count set to n for the block."""
    return _setting(lrptext.get_num_threads, lrptext.set_num_threads, n)


def core_winograd(mode: str):
    """lrptext.set_winograd(mode) for the block."""
    return _setting(lrptext.get_winograd, lrptext.set_winograd, mode)


def core_blas(torch_blas: bool):
    """The core's own matrix products in torch's BLAS (True) or in its OpenBLAS for the block
    (lrptext._native.use_torch_blas)."""
    from lrptext import _native
    return _setting(lambda: _native.core_blas == "torch", _native.use_torch_blas, torch_blas)
