"""The results file (``results.json``): schema, validation, atomic writing.

The JSON Schema (``tokbench/schemas/results.schema.json``, draft 2020-12) fixes the
structure. On top of it, :func:`validate_results` checks what a schema cannot say well:
every number in the file is finite (``NaN``/``Infinity`` are rejected wherever they
appear), ``created`` is an ISO 8601 timestamp with a time zone, every task is registered
(`tokbench.task_registry`), every metric is registered (`tokbench.metrics.registry`), its mean and 95% interval lie in its registered range, and
the mean lies inside its interval.
Every error names the JSON path of the field (``$.tasks.text.metrics.cer_gt``) and the reason.
"""
from __future__ import annotations

import json
import math
from datetime import datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import jsonschema

from tokbench.atomic import atomic_write_text
from tokbench.metrics.registry import get_metric, is_registered

RESULTS_SCHEMA_VERSION = 1

@lru_cache(maxsize=1)
def load_schema() -> dict:
    """The results-file JSON Schema (draft 2020-12) shipped in ``tokbench.schemas``."""
    return json.loads(resources.files("tokbench.schemas").joinpath("results.schema.json").read_text())


def json_path(parts: Any) -> str:
    """A JSON path such as ``$.tasks.text.metrics.cer_gt`` or ``$.datasets[0].fingerprint``."""
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _non_finite(obj: Any, parts: tuple = ()) -> Iterator[tuple]:
    """Paths of every NaN or infinite float in a parsed JSON document."""
    if isinstance(obj, float) and not math.isfinite(obj):
        yield parts
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _non_finite(value, (*parts, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _non_finite(value, (*parts, i))


def _check_created(value: str) -> str | None:
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return f"not an ISO 8601 date-time: {value!r}"
    return None if stamp.tzinfo is not None else f"date-time {value!r} has no time zone (write UTC, e.g. +00:00)"


def _check_metrics(obj: dict) -> list[str]:
    """Every task and metric is registered and each metric lies in its registered range; unknown
    names are refused (a plug-in's tasks and metrics are known wherever the plug-in is installed)."""
    from tokbench.task_registry import task_names

    errors, tasks = [], set(task_names())
    for task, block in obj["tasks"].items():
        if task not in tasks:
            errors.append(f"{json_path(('tasks', task[:100]))}: unknown task {task[:100]!r} (not in the task "
                          "registry; install the plug-in that declares it)")
            continue
        for name, metric in block["metrics"].items():
            where = json_path(("tasks", task, "metrics", name))
            if not is_registered(name):
                errors.append(f"{where}: unknown metric {name[:100]!r} (not in the metric registry; "
                              "install the plug-in that declares it)")
                continue
            declared = get_metric(name)
            mean, (lo_ci, hi_ci) = metric["mean"], metric["ci95"]
            if not all(declared.in_range(v) for v in (mean, lo_ci, hi_ci)):
                errors.append(f"{where}: {name} must lie in [{declared.low}, {declared.high}], "
                              f"got mean {mean} ci95 {metric['ci95']}")
            if not lo_ci <= mean <= hi_ci:
                errors.append(f"{where}: mean {mean} is outside its interval {metric['ci95']}")
    return errors


def validate_results(obj: Any) -> list[str]:
    """Every problem with a parsed results object, each as ``"<json path>: <reason>"``.

    An empty list means the object is a valid results file of schema version
    :data:`RESULTS_SCHEMA_VERSION`.
    """
    errors = [f"{json_path(parts)}: value must be a finite number (NaN and Infinity are not allowed)"
              for parts in _non_finite(obj)]
    if errors:
        return errors
    validator = jsonschema.Draft202012Validator(load_schema())
    schema_errors = sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
    errors = [f"{json_path(e.absolute_path)}: {e.message}" for e in schema_errors]
    if errors:
        return errors
    problem = _check_created(obj["created"])
    if problem:
        errors.append(f"$.created: {problem}")
    return errors + _check_metrics(obj)


def write_results(path: str | Path, obj: dict) -> None:
    """Validate ``obj``, then write it atomically (temp file + ``os.replace``: no reader sees half a file)."""
    errors = validate_results(obj)
    if errors:
        raise ValueError("results do not match the schema: " + "; ".join(errors[:5]))
    atomic_write_text(Path(path), json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def read_results(path: str | Path) -> dict:
    """Read and validate a results file; ``ValueError`` naming the file and the first problems otherwise."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read a results file ({err})") from err
    errors = validate_results(obj)
    if errors:
        raise ValueError(f"{path}: invalid results file: " + "; ".join(errors[:5]))
    return obj
