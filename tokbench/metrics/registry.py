"""The metric registry: every metric declared once, looked up here.

A `Metric` (`tokbench.metrics.declaration`) says what a number means: name and display
title, unit, valid range, direction, aggregation (a per-image mean with a Student-t
interval, or one value over the dataset such as rFID), the pretrained weights it needs and
how its network is built, and a one-line definition. The results check, interval clipping,
the terminal table, ``report.md``/``report.html``, ``tokbench compare`` and the leaderboard
all read it: the leaderboard never takes a metric's direction from a submission and refuses
names that are not registered.

Built-in metrics are declared in `tokbench.metrics.catalog`; a task plug-in declares its own
`Metric` objects in its ``metrics`` attribute, registered when the task loads
(`tokbench.task_registry`). Lookups load every installed task once, so a plug-in's metrics
are known wherever the plug-in is installed.
"""
from __future__ import annotations

import sys
from typing import Iterable

from tokbench.metrics import catalog  # noqa: F401  (registers the built-in metrics)
from tokbench.metrics.declaration import Metric, register_metric, register_metrics, registered
from tokbench.task_registry import load_all_tasks

__all__ = ["Metric", "register_metric", "register_metrics", "get_metric", "is_registered", "all_metrics",
           "metric_label", "registration_order"]

_loaded_for_path: tuple[str, ...] | None = None


def _ensure_plugins() -> None:
    """Load every installed task once -- again only if ``sys.path`` changed (a plug-in added
    at run time), so looking up many unknown names costs one entry-point scan, not many.
    Look-ups of names already registered skip this: the store only grows."""
    global _loaded_for_path
    if _loaded_for_path != tuple(sys.path):
        _loaded_for_path = tuple(sys.path)
        load_all_tasks()


def all_metrics() -> dict[str, Metric]:
    """Every registered metric (built-in and plug-ins'), by name, in registration order."""
    _ensure_plugins()
    return dict(registered())


def is_registered(name: str) -> bool:
    if name not in registered():
        _ensure_plugins()
    return name in registered()


def get_metric(name: str) -> Metric:
    """The declaration of ``name``; ``KeyError`` naming the registered metrics otherwise."""
    if not is_registered(name):
        raise KeyError(f"unknown metric {name!r}; registered: {', '.join(registered())}")
    return registered()[name]


def metric_label(name: str) -> str:
    """The registered title and unit (``PSNR (dB)``); a name not registered here as it is
    (results of a plug-in that is not installed)."""
    return get_metric(name).label() if is_registered(name) else name


def registration_order(names: Iterable[str]) -> list[str]:
    """``names`` in the order their metrics were registered (built-ins in catalog order); unknown last."""
    rank = {name: i for i, name in enumerate(all_metrics())}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))
