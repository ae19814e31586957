"""`Metric`: one metric's declaration, and the store that `register_metric` adds to.

Lookups go through `tokbench.metrics.registry`, which first loads the built-in catalog and
the metrics of every installed task plug-in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

AGGREGATIONS = ("per_image", "dataset")


@dataclass(frozen=True)
class Metric:
    """One metric's declaration (see the module docstring)."""

    name: str
    title: str
    definition: str
    higher_is_better: bool
    unit: str = ""
    low: float = -math.inf
    high: float = math.inf
    aggregation: str = "per_image"
    weights: str | None = None  # a key of tokbench.weights.WEIGHT_FILES
    network: str | None = None  # "module:function(weights_path, device)" building what the task scores with
    percent: bool = False  # a fraction that reports show x100 with "%" (the published convention, e.g. TokBench's)

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 100 or not self.name.replace("_", "").isalnum():
            raise ValueError(f"metric name must be 1-100 letters, digits or '_', got {self.name!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"metric {self.name}: aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if not self.low < self.high:
            raise ValueError(f"metric {self.name}: valid range [{self.low}, {self.high}] is empty")
        if (self.weights is None) != (self.network is None):
            raise ValueError(f"metric {self.name}: weights and network are given together or not at all")

    @property
    def bounds(self) -> tuple[float, float]:
        return (self.low, self.high)

    def in_range(self, value: float) -> bool:
        return self.low <= value <= self.high

    def label(self) -> str:
        """``title (unit)`` for tables."""
        return f"{self.title} ({self.unit})" if self.unit else self.title


_metrics: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Add ``metric``; registering the same declaration twice is a no-op, a different one an error."""
    current = _metrics.get(metric.name)
    if current is not None and current != metric:
        raise ValueError(f"metric {metric.name!r} is already registered with another declaration")
    _metrics[metric.name] = metric
    return metric


def register_metrics(metrics: Iterable[Metric]) -> None:
    for metric in metrics:
        register_metric(metric)


def registered() -> dict[str, Metric]:
    """What has been registered so far, in registration order (the live store)."""
    return _metrics
