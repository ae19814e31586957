"""Building the networks of weighted metrics (LPIPS, Inception) from their declarations.

A `Metric` with ``weights`` names a file of `tokbench.weights` and a ``network`` builder
(``"module:function"``, called as ``function(weights_path, device)``). The runner asks for
the metrics its tasks report; every missing file is named in one error before any work.
"""
from __future__ import annotations

import importlib
from typing import Any, Iterable

from tokbench import weights
from tokbench.metrics.registry import all_metrics, get_metric

ALIASES = {"fid": "rfid"}  # --skip-metric lpips,fid reads naturally too


def weighted_metric_names() -> list[str]:
    """Registered metrics that need pretrained weights (what ``--skip-metric`` takes)."""
    return [name for name, metric in all_metrics().items() if metric.weights]


def canonical_skips(names: Iterable[str]) -> list[str]:
    """``--skip-metric`` names, aliases resolved; ``ValueError`` for names that need no weights."""
    skips = sorted({ALIASES.get(n, n) for n in names})
    allowed = weighted_metric_names()
    bad = [n for n in skips if n not in allowed]
    if bad:
        raise ValueError(f"--skip-metric takes {', '.join(allowed)}; got {', '.join(bad)}")
    return skips


def build_network(name: str, weights_path, device: str) -> Any:
    """Call metric ``name``'s network builder on its weights file."""
    module_name, _, function = get_metric(name).network.partition(":")
    return getattr(importlib.import_module(module_name), function)(weights_path, device)


def load_networks(metric_names: Iterable[str], skip: Iterable[str], weights_dir: str | None, device: str) -> dict[str, Any]:
    """Networks of the weighted metrics among ``metric_names`` that are not skipped, by metric name.

    Raises `tokbench.weights.MissingWeightsError` naming every missing file before loading any.
    """
    skip = set(skip)
    wanted = [get_metric(n) for n in dict.fromkeys(metric_names) if n not in skip and get_metric(n).weights]
    paths = weights.require([m.weights for m in wanted], weights_dir)
    return {m.name: build_network(m.name, paths[m.weights], device) for m in wanted}
