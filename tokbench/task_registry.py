"""Name -> benchmark task, found through the entry-point group ``tokbench.tasks``.

tokbench's own tasks (reconstruction, detail, text, generation) are registered there too,
so the runner knows no task by name: adding a task is one module and one entry point (or
`register_task` at run time, e.g. in a notebook or a test). Loading a task registers the
`Metric` declarations it carries in its ``metrics`` attribute, so plug-in metrics are known
wherever the plug-in is installed.
"""
from __future__ import annotations

from typing import Any

from tokbench.entry_point_registry import EntryPointRegistry
from tokbench.metrics.declaration import Metric, register_metric

ENTRY_POINT_GROUP = "tokbench.tasks"


def _adopt(name: str, task_cls: Any) -> type:
    """Check a task class's declaration and register its own metrics."""
    if getattr(task_cls, "name", None) != name:
        raise ValueError(f"task entry point {name!r} loads a class named {getattr(task_cls, 'name', None)!r}")
    for metric in task_cls.metrics:
        if isinstance(metric, Metric):
            register_metric(metric)
    return task_cls


_tasks: EntryPointRegistry[type] = EntryPointRegistry(ENTRY_POINT_GROUP, "task", _adopt)


def register_task(task_cls: type) -> type:
    """Register a task class at run time (usable as a class decorator)."""
    return _tasks.register(task_cls.name, task_cls)


def task_names() -> list[str]:
    """Every available task: entry points and run-time registrations."""
    return _tasks.names()


def get_task(name: str) -> type:
    """The task class registered as ``name``; ``ValueError`` naming the available tasks otherwise."""
    return _tasks.get(name)


def load_all_tasks() -> dict[str, type]:
    """Load every task (so that every plug-in metric is registered)."""
    return {name: get_task(name) for name in task_names()}
