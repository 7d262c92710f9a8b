"""Interleaved timing: every method runs once per round, in the same process, after warm-up; medians and
spreads over rounds, so that load on a shared machine hits all methods alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(methods: dict[str, Callable[[], object]], *, rounds: int, warmup: int = 2,
                synchronize: Callable[[], None] = lambda: None, min_seconds: float = 0.0,
                max_rounds: int | None = None) -> dict[str, dict]:
    """`synchronize` waits for queued device work (torch.cuda.synchronize on a GPU) around each timed call. Rounds
    go on past `rounds` (up to `max_rounds`) until every method has run for `min_seconds` in all: a median of five
    sub-millisecond calls moved by 2x with the load of a shared machine."""
    for _ in range(warmup):
        for fn in methods.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in methods}
    done = 0
    while done < rounds or (done < (max_rounds or rounds) and min(map(sum, samples.values())) < min_seconds):
        done += 1
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
            "rounds": done,
        }
    return out
