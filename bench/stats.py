"""Percentiles and the summaries every scenario reports."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between closest ranks; None when
    there are no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def describe(values: Sequence[float], *, scale: float = 1.0, digits: int = 3) -> dict[str, Any]:
    """n, mean, min, p50, p95, p99, max of `values` multiplied by `scale` (e.g. 1000: s -> ms)."""
    if not values:
        return {
            "n": 0,
            "mean": None,
            "min": None,
            "p50": None,
            "p95": None,
            "p99": None,
            "max": None,
        }
    ordered = sorted(v * scale for v in values)

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, digits)

    return {
        "n": len(ordered),
        "mean": rounded(statistics.fmean(ordered)),
        "min": rounded(ordered[0]),
        "p50": rounded(percentile(ordered, 50)),
        "p95": rounded(percentile(ordered, 95)),
        "p99": rounded(percentile(ordered, 99)),
        "max": rounded(ordered[-1]),
    }


def median_of(summaries: Iterable[dict[str, Any]], key: str) -> float | None:
    """The median over repeats of one statistic (e.g. each repeat's p99)."""
    values = [s[key] for s in summaries if s.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def repeated(repeats: Sequence[Sequence[float]], *, scale: float = 1.0) -> dict[str, Any]:
    """Per-repeat summaries, the median of each statistic over the repeats (the headline
    numbers), and the pooled summary of all samples."""
    per_repeat = [describe(r, scale=scale) for r in repeats]
    pooled = describe([v for r in repeats for v in r], scale=scale)
    medians = {key: median_of(per_repeat, key) for key in ("p50", "p95", "p99", "mean", "max")}
    return {
        "repeats": len(repeats),
        "median_of_repeats": medians,
        "pooled": pooled,
        "per_repeat": per_repeat,
    }


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)
