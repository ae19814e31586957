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


def missing_weights(metric_names: Iterable[str], weights_dir: str | None) -> dict[str, str]:
    """The weighted metrics among ``metric_names`` whose weights file is not on disk -> one line
    saying which file is missing and how to get it (what an eval prints and records when it skips them)."""
    out = {}
    for name in dict.fromkeys(metric_names):
        metric = get_metric(name)
        if not metric.weights:
            continue
        path = weights.weight_path(metric.weights, weights_dir)
        if not path.is_file():
            out[name] = (f"weights not found: {path} ({weights.WEIGHT_FILES[metric.weights].purpose}); to compute it, "
                         f"run 'tokbench weights fetch --metrics {metric.weights}' on a machine with network and copy "
                         f"the file there or pass --weights-dir")
    return out


def computable_metrics(metric_names: Iterable[str], weights_dir: str | None) -> list[str]:
    """``metric_names`` less those whose pretrained weights are missing (for protocol presets:
    a preset that needs a metric this leaves out must refuse to run)."""
    names = list(dict.fromkeys(metric_names))
    missing = missing_weights(names, weights_dir)
    return [n for n in names if n not in missing]


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
