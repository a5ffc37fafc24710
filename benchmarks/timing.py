"""Timing helper shared by the benchmarks that time a call in-process."""
from __future__ import annotations

import statistics
import time


def median_time(fn, repeats: int) -> float:
    """Median wall seconds of `repeats` calls of `fn()` (warm it up first if it compiles)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
