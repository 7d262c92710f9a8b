"""Interleaved timing: every method runs once per round, in the same process, after warm-up; medians and
spreads over rounds, so that load on a shared machine hits all methods alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(methods: dict[str, Callable[[], object]], *, rounds: int, warmup: int = 2,
                synchronize: Callable[[], None] = lambda: None) -> dict[str, dict]:
    """`synchronize` waits for queued device work (torch.cuda.synchronize on a GPU) around each timed call."""
    for _ in range(warmup):
        for fn in methods.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            synchronize()
            start = time.perf_counter()
            fn()
            synchronize()
            samples[name].append(time.perf_counter() - start)
    out = {}
    for name, values in samples.items():
        values.sort()
        out[name] = {
            "median_s": statistics.median(values),
            "p10_s": values[len(values) // 10],
            "p90_s": values[(9 * len(values)) // 10],
            "rounds": rounds,
        }
    return out
