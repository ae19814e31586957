"""Name -> benchmark task, found through the entry-point group ``tokbench.tasks``.

tokbench's own tasks (reconstruction, detail, text, generation) are registered there too,
so the runner knows no task by name: adding a task is one module and one entry point (or
`register_task` at run time, e.g. in a notebook or a test). Loading a task registers the
`Metric` declarations it carries in its ``metrics`` attribute, so plug-in metrics are known
wherever the plug-in is installed.
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from tokbench.metrics.declaration import Metric, register_metric

ENTRY_POINT_GROUP = "tokbench.tasks"

_tasks: dict[str, type] = {}


def _adopt(name: str, task_cls: Any) -> type:
    """Check a task class's declaration, register its own metrics, remember it."""
    if getattr(task_cls, "name", None) != name:
        raise ValueError(f"task entry point {name!r} loads a class named {getattr(task_cls, 'name', None)!r}")
    for metric in task_cls.metrics:
        if isinstance(metric, Metric):
            register_metric(metric)
    _tasks[name] = task_cls
    return task_cls


def register_task(task_cls: type) -> type:
    """Register a task class at run time (usable as a class decorator)."""
    return _adopt(task_cls.name, task_cls)


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def task_names() -> list[str]:
    """Every available task: entry points and run-time registrations."""
    return sorted(set(_entry_points()) | set(_tasks))


def get_task(name: str) -> type:
    """The task class registered as ``name``; ``ValueError`` naming the available tasks otherwise."""
    if name not in _tasks:
        eps = _entry_points()
        if name not in eps:
            raise ValueError(f"unknown task {name!r}; choose from {', '.join(task_names())}")
        _adopt(name, eps[name].load())
    return _tasks[name]


def load_all_tasks() -> dict[str, type]:
    """Load every task (so that every plug-in metric is registered)."""
    return {name: get_task(name) for name in task_names()}
