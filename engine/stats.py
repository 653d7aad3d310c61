"""Intervals for repeated timings, shared by the benchmark job, the charts and the benchmark scripts: a median with a
distribution-free 95 % interval, its relative half-width, and whether two intervals overlap (a difference between
them is within the noise). Pure Python, no numpy."""
from __future__ import annotations

import math
import statistics


def half_width(values: list[float]) -> float:
    """Half the width of the median's 95 % interval, relative to the median."""
    median, low, high = median_interval(values)
    return (high - low) / 2 / median if median else float("inf")


def median_interval(values: list[float]) -> tuple[float, float, float]:
    """The median and a distribution-free 95 % interval for it: the order statistics x(k) and x(n+1-k) with the
    largest k whose binomial coverage is still >= 95 % (for n = 6: the range, 96.9 %). With fewer than six values
    no such k exists; the range is returned (it covers less than 95 %)."""
    xs = sorted(values)
    n = len(xs)
    k = 1
    while k < n // 2 and 1 - 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n >= 0.95:
        k += 1
    return statistics.median(xs), xs[k - 1], xs[n - k]


def within_noise(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    """Whether two (median, low, high) intervals overlap: a difference between them is not shown."""
    return a[1] <= b[2] and b[1] <= a[2]
