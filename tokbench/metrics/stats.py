"""Aggregation: mean and a 95% confidence interval over per-image values."""
from __future__ import annotations

import math

import numpy as np
from scipy import stats


def mean_ci95(values, bounds: tuple[float, float] | None = None) -> dict:
    """Mean with a Student-t 95% interval (``mean ± t_{0.975,n-1} · s / sqrt(n)``), the
    interval clipped to the metric's valid ``bounds`` (a CER interval never goes below 0).

    A t-interval rather than a bootstrap: deterministic (results must not depend on a
    seed or on the number of ranks) and right for means of a few dozen images. With one
    value the interval collapses to the value.
    """
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(arr.size)
    if n == 0:
        return {"mean": None, "ci95": [None, None], "n": 0}
    mean = float(arr.mean())
    if n == 1:
        return {"mean": mean, "ci95": [mean, mean], "n": 1}
    half = float(stats.t.ppf(0.975, n - 1) * arr.std(ddof=1) / math.sqrt(n))
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"mean": mean, "ci95": [lo, hi], "n": n}
