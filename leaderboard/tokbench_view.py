"""The leaderboard in the form of TokBench's table: T-ACC / T-NED and F-Sim per size bucket.

TokBench ("Evaluating Text and Face Preservation in Visual Tokenizers") reports, per
tokenizer, text accuracy and 1 - normalized edit distance and face similarity for small,
medium and large instances and their mean. This view lays tokbench's metrics of the same
names out that way, so that a user can put them next to the published table.

Columns come from the metric registry: a column is shown only for a metric that is
registered here and present in at least one listed entry (whichever task holds it), so the
view works whether or not a task that declares some of them is installed.

T-ACC and T-NED are shown in percent, as TokBench's table prints them (the stored values and
the CSV stay fractions, the registry's unit). Rows are split into tables so that in each
table every task was scored under one setting (suite, protocol, resolution,
`tokbench.comparability`): an entry joins the first table whose settings agree with its own
on every task both have.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from tokbench.comparability import Setting
from tokbench.leaderboard.store import Entry
from tokbench.metrics.registry import get_metric, is_registered

BUCKET_NAMES = ("small", "medium", "large", "mean")
# (group title, metric-name prefix): TokBench's column groups, in its order.
GROUPS = (("T-ACC", "tacc"), ("T-NED", "tned"), ("F-Sim", "face_sim"))
# Groups TokBench prints in percent (its F-Sim is a cosine similarity, printed as one).
PERCENT_GROUPS = ("T-ACC", "T-NED")


@dataclass(frozen=True)
class Column:
    """One column of the view: a registered metric, its group and size bucket."""

    metric: str
    group: str
    bucket: str
    higher_is_better: bool

    @property
    def percent(self) -> bool:
        """Shown in percent (TokBench's convention for this group)."""
        return self.group in PERCENT_GROUPS

    def shown(self, value: float) -> float:
        """``value`` as the view prints it."""
        return 100.0 * value if self.percent else value


def metric_of(entry: Entry, metric: str) -> dict[str, Any] | None:
    """``{"mean", "ci95", ...}`` of ``metric`` in whichever task of ``entry`` reports it, else None."""
    for task in sorted(entry.metrics):
        if metric in entry.metrics[task]:
            return entry.metrics[task][metric]
    return None


def tokbench_columns(entries: list[Entry]) -> list[Column]:
    """The view's columns: TokBench's metrics that are registered and reported by some entry."""
    columns = []
    for group, prefix in GROUPS:
        for bucket in BUCKET_NAMES:
            name = f"{prefix}_{bucket}"
            if is_registered(name) and any(metric_of(e, name) is not None for e in entries):
                columns.append(Column(name, group, bucket, get_metric(name).higher_is_better))
    return columns


def tokbench_rows(entries: list[Entry], columns: list[Column]) -> list[tuple[Entry, list[dict[str, Any] | None]]]:
    """Entries that report any of the columns, each with its values, ranked by the first
    ``*_mean`` column (best first by the registry's direction; entries without it last)."""
    rows = [(e, [metric_of(e, c.metric) for c in columns]) for e in entries]
    rows = [(e, values) for e, values in rows if any(v is not None for v in values)]
    means = [i for i, c in enumerate(columns) if c.bucket == "mean"]
    if means:
        i = means[0]
        sign = -1.0 if columns[i].higher_is_better else 1.0
        rows.sort(key=lambda r: (r[1][i] is None, sign * r[1][i]["mean"] if r[1][i] is not None else 0.0, r[0].id))
    return rows


def metric_task(entry: Entry, metric: str) -> str | None:
    """The task of ``entry`` that reports ``metric`` (the one :func:`metric_of` reads), else None."""
    return next((task for task in sorted(entry.metrics) if metric in entry.metrics[task]), None)


@dataclass
class Table:
    """One table of the view: its rows share one setting per task."""

    settings: dict[str, Setting]
    rows: list[tuple[Entry, list[dict[str, Any] | None]]]

    def label(self) -> str:
        """``text: text · no protocol · 256 px; faces: ...``."""
        return "; ".join(f"{task}: {setting.label()}" for task, setting in sorted(self.settings.items()))


def tokbench_tables(entries: list[Entry], columns: list[Column] | None = None) -> tuple[list[Column], list[Table]]:
    """The view's columns and its tables (largest first), each ranked by :func:`tokbench_rows`."""
    columns = tokbench_columns(entries) if columns is None else columns
    tables: list[Table] = []
    for entry, values in tokbench_rows(entries, columns):
        tasks = {metric_task(entry, c.metric) for c, v in zip(columns, values) if v is not None}
        own = {task: setting for task in tasks if task and (setting := entry.setting(task)) is not None}
        table = next((t for t in tables if all(t.settings.get(k, s) == s for k, s in own.items())), None)
        if table is None:
            table = Table({}, [])
            tables.append(table)
        table.settings.update(own)
        table.rows.append((entry, values))  # rows arrive ranked; appending keeps each table's order
    return columns, sorted(tables, key=lambda t: -len(t.rows))


def recognizer_of(entry: Entry) -> str | None:
    """The OCR engine of the entry's text scores, where recorded."""
    return next((r for task in sorted(entry.settings) if (r := entry.settings[task].get("recognizer"))), None)


def tokbench_frame(entries: list[Entry]) -> pd.DataFrame:
    """The view as a table of fractions (the registry's unit): tokenizer, status, recognizer,
    the setting its table groups it by, then ``GROUP bucket`` columns (means); table by table."""
    columns, tables = tokbench_tables(entries)
    names = [f"{c.group} {c.bucket}" for c in columns]
    records = []
    for table in tables:
        for entry, values in table.rows:
            record: dict[str, Any] = {"id": entry.id, "tokenizer": entry.tokenizer, "status": entry.status,
                                      "recognizer": recognizer_of(entry), "setting": table.label()}
            for name, value in zip(names, values):
                record[name] = None if value is None else value["mean"]
            records.append(record)
    return pd.DataFrame(records, columns=["id", "tokenizer", "status", "recognizer", "setting", *names])
