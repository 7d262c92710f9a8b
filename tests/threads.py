"""The C++ core's thread count, set for a block of a test and restored afterwards."""

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
