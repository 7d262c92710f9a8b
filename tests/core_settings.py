"""The C++ core's process-wide settings (threads, Winograd), set for a block of a test and restored afterwards."""

from __future__ import annotations

import contextlib

import lrptext


@contextlib.contextmanager
def core_threads(n: int):
    """The C++ core's thread count set to n for the block."""
    previous = lrptext.get_num_threads()
    lrptext.set_num_threads(n)
    try:
        yield
    finally:
        lrptext.set_num_threads(previous)


@contextlib.contextmanager
def core_winograd(mode: str):
    """lrptext.set_winograd(mode) for the block."""
    previous = lrptext.get_winograd()
    lrptext.set_winograd(mode)
    try:
        yield
    finally:
        lrptext.set_winograd(previous)
