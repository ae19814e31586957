"""How a metric's numbers are written in reports and terminal tables, from its declaration.

One rule per kind of number, so a value reads the same everywhere:

- declared ``percent`` (a fraction whose published convention is percent, e.g. TokBench's T-ACC):
  x100, two decimals and ``%`` (``86.89%``);
- unit ``dB``: two decimals (``31.64``);
- unit ``bits``: thousands separators, no decimals, from 1,000 up (``86,688``);
- anything else below 10 (fractions, SSIM, LPIPS, error rates, cycles/px): four decimals
  (``0.8746``, ``0.0038``, never ``4.45e-06``);
- from 10 up: four significant digits, thousands separators from 10,000 up (``12.35``, ``1,235``).

An interval is shown as ``[low, high]``, except for metrics pooled over the dataset (one value,
no per-image spread), which read ``pooled, no interval`` instead of a zero-width interval, and
means of a single image (``one image, no interval``).
"""
from __future__ import annotations

import math

from tokbench.metrics.declaration import Metric
from tokbench.metrics.registry import get_metric, is_registered

NO_VALUE = "—"
POOLED = "pooled, no interval"
ONE_IMAGE = "one image, no interval"


def _declaration(name: str) -> Metric | None:
    return get_metric(name) if is_registered(name) else None


def format_number(value: float | None, digits: int = 4) -> str:
    """``digits`` significant digits, thousands separators from ``10**digits`` up; ``—`` for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NO_VALUE
    if value != 0 and abs(value) >= 10**digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def format_value(name: str, value: float | None) -> str:
    """``value`` of metric ``name`` written by the rule of its declaration (see the module docstring)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NO_VALUE
    metric = _declaration(name)
    if metric is None:
        return f"{value:.4f}" if abs(value) < 10 else format_number(value)
    if metric.percent:
        return f"{100 * value:.2f}%"
    if metric.unit == "dB":
        return f"{value:.2f}"
    if metric.unit == "bits":
        return f"{value:,.0f}" if abs(value) >= 1000 else format_number(value)
    if abs(value) < 10:
        return f"{value:.4f}"
    return format_number(value)


def is_pooled(name: str, entry: dict) -> bool:
    """Whether ``entry`` is one value over the dataset (declared so, or carrying no interval)."""
    metric = _declaration(name)
    if metric is not None and metric.aggregation == "dataset":
        return True
    lo, _ = entry.get("ci95") or (None, None)
    return lo is None


def format_interval(name: str, entry: dict) -> str:
    """``[low, high]`` of a metric entry, ``pooled, no interval``, or ``one image, no interval``."""
    if is_pooled(name, entry):
        return POOLED
    if entry.get("n", 0) <= 1:
        return ONE_IMAGE
    lo, hi = entry["ci95"]
    return f"[{format_value(name, lo)}, {format_value(name, hi)}]"


def format_entry(name: str, entry: dict | None) -> str:
    """``value [low, high]`` or ``value (pooled, no interval)``; empty for no entry."""
    if not entry or entry.get("mean") is None:
        return ""
    interval = format_interval(name, entry)
    value = format_value(name, entry["mean"])
    return f"{value} ({interval})" if interval in (POOLED, ONE_IMAGE) else f"{value} {interval}"


def direction_arrow(name: str, higher_is_better: bool | None = None) -> str:
    """``↑`` where higher is better, ``↓`` where lower is (the registry's word over the caller's)."""
    metric = _declaration(name)
    higher = metric.higher_is_better if metric is not None else higher_is_better
    if higher is None:
        return ""
    return "↑" if higher else "↓"
