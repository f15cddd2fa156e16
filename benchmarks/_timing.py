"""Timing helpers shared by the benchmark scripts (imported by scripts in this folder)."""

from __future__ import annotations

import time
from typing import Callable


def interleaved_times(ours: Callable[[], object], reference: Callable[[], object],
                      repeats: int) -> tuple[list[float], list[float]]:
    """Seconds per call of each side, alternating ours, reference, ours, reference, ...

    Alternating puts both sides under the same machine conditions: on a shared 2-core CPU the
    speed drifts by up to 1.5x within minutes, and timing one side after the other moved the
    ratio with it. One untimed call of each side comes first (compilation, warm caches).
    """
    ours(), reference()
    our_times, ref_times = [], []
    for _ in range(repeats):
        for fn, times in ((ours, our_times), (reference, ref_times)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return our_times, ref_times


def ratio_spread(our_times: list[float], ref_times: list[float]) -> list[float]:
    """[min, max] over the repeats of reference time / our time, each pair timed back to back."""
    ratios = [r / o for o, r in zip(our_times, ref_times)]
    return [round(min(ratios), 3), round(max(ratios), 3)]


def percentile(xs: list[float], q: float) -> float:
    """The ``q`` quantile of ``xs`` (nearest rank, no interpolation)."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]
