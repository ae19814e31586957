"""HTML of the leaderboard page and the entry pages (Jinja2, autoescaped), for the server and the static export.

The same templates serve both: :class:`Site` says where the static files are and how an
entry page is linked (``/entries/3`` on the server, ``entries/3.html`` in the export).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from tokbench.leaderboard.plot import Point, build_plot
from tokbench.leaderboard.query import primary_metric
from tokbench.leaderboard.store import Entry
from tokbench.leaderboard.tokbench_view import tokbench_columns, tokbench_rows
from tokbench.metrics.registry import get_metric, metric_label, registration_order

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
TASK_ORDER = ("reconstruction", "detail", "text", "faces", "generation")


@dataclass(frozen=True)
class Site:
    """How pages link to each other: ``static`` prefix and the URL of an entry page."""

    static: str
    home: str
    entry_url: Callable[[int], str]
    results_url: Callable[[int], str]
    tokbench: str = "/tokbench"  # the TokBench-form view (`tokbench.leaderboard.tokbench_view`)


SERVER_SITE = Site(static="/static/", home="/", entry_url=lambda i: f"/entries/{i}",
                   results_url=lambda i: f"/api/entries/{i}/results.json")


def static_site(depth: int) -> Site:
    """Relative links for the static export, for a page ``depth`` folders below the site root."""
    up = "../" * depth
    return Site(static=f"{up}static/", home=f"{up}index.html", entry_url=lambda i: f"{up}entries/{i}.html",
                results_url=lambda i: f"{up}entries/{i}.json", tokbench=f"{up}tokbench.html")


def number(value: Any, digits: int = 4) -> str:
    """A compact, readable number: ``31.27``, ``0.8512``, ``3.7e+04``; ``—`` for none."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (abs(value) >= 1000 and abs(value) < 1e15):
        return f"{round(value):,}"
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.{max(digits - len(str(int(abs(value)))), 1)}f}" if abs(value) >= 1 else f"{value:.{digits}f}"


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The Jinja2 environment: autoescaping on for every template, undefined names are errors."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["number"] = number
    env.filters["metric_label"] = metric_label
    env.filters["higher_is_better"] = lambda name: get_metric(name).higher_is_better
    return env


def metric_order(task: str, names: set[str]) -> list[str]:
    """The task's primary metric first, then the others in registration order."""
    primary = primary_metric(task)
    return ([primary] if primary in names else []) + [m for m in registration_order(names) if m != primary]


def task_order(tasks: set[str]) -> list[str]:
    """Built-in tasks in their usual order, then others alphabetically."""
    return [t for t in TASK_ORDER if t in tasks] + sorted(tasks - set(TASK_ORDER))


def _task_section(task: str, entries: list[Entry]) -> dict[str, Any]:
    rows = [e for e in entries if task in e.metrics]
    metrics = metric_order(task, {m for e in rows for m in e.metrics[task]})
    plot_metric = metrics[0] if metrics else None
    plot = None
    # Directions come from the metric registry, never from a submission.
    directions = {m: get_metric(m).higher_is_better for m in metrics}
    if plot_metric:
        higher = directions[plot_metric]
        points = [Point(e.id, e.tokenizer, e.family, e.bits_per_image, e.metrics[task][plot_metric]["mean"])
                  for e in rows if plot_metric in e.metrics[task] and e.bits_per_image]
        plot = build_plot(points, plot_metric, higher)
    if plot_metric:  # ranked by the task's primary metric, best first, entries without it last
        sign = -1.0 if directions[plot_metric] else 1.0
        rows.sort(key=lambda e: (plot_metric not in e.metrics[task],
                                 sign * e.metrics[task][plot_metric]["mean"] if plot_metric in e.metrics[task] else 0.0))
    return {"task": task, "rows": rows, "metrics": metrics, "directions": directions, "plot": plot,
            "unplotted": sum(1 for e in rows if not e.bits_per_image)}


def render_index(entries: list[Entry], site: Site = SERVER_SITE, filters: dict[str, Any] | None = None,
                 generated: str | None = None) -> str:
    """The leaderboard page: one table and plot per task over verified entries, then the unverified list."""
    verified = [e for e in entries if e.status == "verified"]
    unverified = [e for e in entries if e.status != "verified"]
    tasks = task_order({t for e in verified for t in e.metrics})
    families = sorted({e.family for e in entries})
    return environment().get_template("index.html").render(
        site=site, sections=[_task_section(t, verified) for t in tasks], unverified=unverified,
        families=families, filters=filters or {}, total=len(entries), generated=generated)


def render_entry(entry: Entry, results: dict[str, Any], site: Site = SERVER_SITE, generated: str | None = None) -> str:
    """The page of one entry: tokenizer, datasets, every task's metrics and extras, hardware, timings."""
    extras = {task: json.dumps(block.get("extra") or {}, indent=1)[:200_000] for task, block in results["tasks"].items()}
    tasks = task_order(set(results["tasks"]))
    return environment().get_template("entry.html").render(
        site=site, entry=entry, results=results, tasks=tasks, extras=extras,
        config=json.dumps(results["tokenizer"]["config"], indent=1), generated=generated)


def render_tokbench(entries: list[Entry], site: Site = SERVER_SITE, generated: str | None = None) -> str:
    """The TokBench-form page: T-ACC / T-NED / F-Sim per size bucket, one row per entry that has any."""
    columns = tokbench_columns(entries)
    groups = [(g, sum(1 for c in columns if c.group == g)) for g in dict.fromkeys(c.group for c in columns)]
    return environment().get_template("tokbench.html").render(
        site=site, columns=columns, groups=groups, rows=tokbench_rows(entries, columns), total=len(entries),
        generated=generated)
