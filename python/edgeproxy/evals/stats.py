"""The few statistics a scorecard needs: 95 % intervals for a quality, percentiles.

- Pass/fail scores (every score 0 or 1): the Wilson score interval, which stays inside [0, 1]
  and behaves at 0 % and 100 % and for small samples, where the normal approximation does not.
- Graded scores (a judge's 0..1): Student's t interval around the mean, clipped to [0, 1].
- Percentiles: linear interpolation between the closest ranks (numpy's default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, Literal

Z95: Final = 1.959963984540054

# Two-sided 95 % quantiles of Student's t by degrees of freedom (1..30, then a few more).
_T95: Final = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    12: 2.179,
    13: 2.160,
    14: 2.145,
    15: 2.131,
    16: 2.120,
    17: 2.110,
    18: 2.101,
    19: 2.093,
    20: 2.086,
    21: 2.080,
    22: 2.074,
    23: 2.069,
    24: 2.064,
    25: 2.060,
    26: 2.056,
    27: 2.052,
    28: 2.048,
    29: 2.045,
    30: 2.042,
    40: 2.021,
    60: 2.000,
    120: 1.980,
}

Method = Literal["wilson", "t", "none"]


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (``(0, 1)`` when ``n`` is 0)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At 0 % and 100 % the bound is exactly 0 or 1 (floating error would leave 0.9999...).
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return (low, high)


def t_quantile(df: int) -> float:
    """The two-sided 95 % quantile of Student's t (the next smaller tabulated df above 30)."""
    if df <= 0:
        return math.inf
    if df in _T95:
        return _T95[df]
    below = max(k for k in _T95 if k < df)
    return _T95[below] if df < 1000 else Z95


def t_interval(
    values: Sequence[float], bounds: tuple[float, float] = (0.0, 1.0)
) -> tuple[float, float]:
    """Student's t 95 % interval of the mean, clipped to ``bounds`` (which it is below 2
    values)."""
    n = len(values)
    if n < 2:
        return bounds
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    half = t_quantile(n - 1) * math.sqrt(variance / n)
    return (max(bounds[0], mean - half), min(bounds[1], mean + half))


def quality_interval(scores: Sequence[float]) -> tuple[float, float, Method]:
    """The 95 % interval of the mean of 0..1 scores, by the method that fits them."""
    if not scores:
        return (0.0, 1.0, "none")
    if all(s in (0.0, 1.0) for s in scores):
        low, high = wilson(sum(scores), len(scores))
        return (low, high, "wilson")
    low, high = t_interval(scores)
    return (low, high, "t")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
