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

from tokbench.leaderboard.display import checks, display_name, grouped_reasons, plural, recognizers, short_hash
from tokbench.leaderboard.plot import Point, build_plot, build_prefix_curve
from tokbench.leaderboard.query import primary_metric
from tokbench.leaderboard.ranking import Board, boards
from tokbench.leaderboard.store import Entry
from tokbench.leaderboard.tokbench_view import recognizer_of, tokbench_tables
from tokbench.metrics.registry import get_metric, is_registered, metric_label, registration_order
from tokbench.comparability import protocol_name, task_settings

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
TASK_ORDER = ("reconstruction", "detail", "text", "faces", "generation")
TASK_TITLES = {"reconstruction": "Reconstruction", "detail": "Fine detail", "text": "Text", "faces": "Faces",
               "generation": "Generation"}


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


def count(value: Any) -> str:
    """A count such as tokens per image: ``256``, ``1,024`` (never ``256.0``); ``—`` for none."""
    if value is None:
        return "—"
    if isinstance(value, float) and value.is_integer():
        return f"{int(value):,}"
    return number(value)


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
    env.filters["count"] = count
    env.filters["metric_label"] = metric_label
    env.filters["metric_title"] = lambda name: get_metric(name).title if is_registered(name) else name
    env.filters["display_name"] = display_name
    env.filters["short_hash"] = short_hash
    env.filters["plural"] = plural
    env.globals.update(checks=checks, codebook=codebook, grouped_reasons=grouped_reasons, zip=zip,
                       task_titles=TASK_TITLES)
    env.filters["higher_is_better"] = lambda name: get_metric(name).higher_is_better
    return env


def metric_order(task: str, names: set[str]) -> list[str]:
    """The task's primary metric first, then the others in registration order."""
    primary = primary_metric(task)
    return ([primary] if primary in names else []) + [m for m in registration_order(names) if m != primary]


def task_order(tasks: set[str]) -> list[str]:
    """Built-in tasks in their usual order, then others alphabetically."""
    return [t for t in TASK_ORDER if t in tasks] + sorted(tasks - set(TASK_ORDER))


def codebook(tokens: float | None, bits: float | None, kind: str) -> str:
    """The codebook an entry's tokens amount to: ``4,096 (12 bits)`` from bits per token;
    ``continuous`` for latents; ``—`` where tokens or bits are unknown."""
    if kind == "continuous":
        return "continuous"
    if not tokens or not bits:
        return "—"
    per_token = bits / tokens
    if per_token > 64:  # more than a 64-bit index per token: not a codebook, say the bits only
        return f"{per_token:.3g} bits"
    return f"{round(2 ** per_token):,} ({per_token:.3g} bits)"


def _board_view(board: Board) -> dict[str, Any]:
    """A board with what the template draws: its plot and label."""
    plot, unplotted = None, 0
    if board.rank_metric:
        metric = board.rank_metric
        points = [Point(e.id, display_name(e.tokenizer), e.family, e.bits_per_image, e.metrics[board.task][metric]["mean"])
                  for e in board.entries if metric in e.metrics[board.task] and e.bits_per_image]
        unplotted = len(board.entries) - len(points)
        plot = build_plot(points, metric, get_metric(metric).higher_is_better)
    return {"board": board, "key": board.setting.key, "label": board.setting.label(), "plot": plot,
            "unplotted": unplotted, "rows": list(zip(board.ranks, board.entries)),
            "more": max(len(e.metrics[board.task]) for e in board.entries) - len(board.headline)}


def _task_section(task: str, entries: list[Entry]) -> dict[str, Any]:
    views = [_board_view(b) for b in boards(entries, task)]
    return {"task": task, "title": TASK_TITLES.get(task, task), "boards": views}


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


def _protocol_text(results: dict[str, Any]) -> str:
    """The protocol preset as the entry page states it: its name and recorded settings, or "none"."""
    name = protocol_name(results)
    if name is None:
        return "none (tokbench's defaults)"
    parts = []
    for key, value in results["protocol"].items():
        if key == "name":
            continue
        if isinstance(value, list):
            value = "; ".join(str(v) for v in value) or "none"
        elif isinstance(value, dict):
            value = json.dumps(value, sort_keys=True)
        parts.append(f"{key.replace('_', ' ')}: {value}")
    return (name + (f" ({', '.join(parts)})" if parts else ""))[:1000]


def render_entry(entry: Entry, results: dict[str, Any], site: Site = SERVER_SITE, generated: str | None = None) -> str:
    """The page of one entry: tokenizer, datasets, every task's metrics and extras, hardware, timings."""
    extras = {task: json.dumps(block.get("extra") or {}, indent=1)[:200_000] for task, block in results["tasks"].items()}
    tasks = task_order(set(results["tasks"]))
    curves = {task: build_prefix_curve((block.get("extra") or {}).get("prefix_curve") or [])
              for task, block in results["tasks"].items()}
    return environment().get_template("entry.html").render(
        site=site, entry=entry, results=results, tasks=tasks, extras=extras, curves=curves,
        config=json.dumps(results["tokenizer"]["config"], indent=1), generated=generated,
        protocol=_protocol_text(results), recognizers=recognizers(results), settings=task_settings(results),
        entry_checks=checks(entry.status, entry.reasons, entry.checkpoint_sha256))


def render_tokbench(entries: list[Entry], site: Site = SERVER_SITE, generated: str | None = None) -> str:
    """The TokBench-form page: T-ACC / T-NED (percent) / F-Sim per size bucket, one table per
    setting (`tokbench.leaderboard.tokbench_view.tokbench_tables`), the recognizer of each row."""
    columns, tables = tokbench_tables(entries)
    groups = [(g, sum(1 for c in columns if c.group == g)) for g in dict.fromkeys(c.group for c in columns)]
    return environment().get_template("tokbench.html").render(
        site=site, columns=columns, groups=groups, tables=tables, total=len(entries), generated=generated,
        shown=sum(len(t.rows) for t in tables), recognizer_of=recognizer_of)
