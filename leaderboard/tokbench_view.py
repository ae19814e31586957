"""The leaderboard in the form of TokBench's table: T-ACC / T-NED and F-Sim per size bucket.

TokBench ("Evaluating Text and Face Preservation in Visual Tokenizers") reports, per
tokenizer, text accuracy and 1 - normalized edit distance and face similarity for small,
medium and large instances and their mean. This view lays tokbench's metrics of the same
names out that way, so that a user can put them next to the published table.

Columns come from the metric registry: a column is shown only for a metric that is
registered here and present in at least one listed entry (whichever task holds it), so the
view works whether or not a task that declares some of them is installed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from tokbench.leaderboard.store import Entry
from tokbench.metrics.registry import get_metric, is_registered

BUCKET_NAMES = ("small", "medium", "large", "mean")
# (group title, metric-name prefix): TokBench's column groups, in its order.
GROUPS = (("T-ACC", "tacc"), ("T-NED", "tned"), ("F-Sim", "face_sim"))


@dataclass(frozen=True)
class Column:
    """One column of the view: a registered metric, its group and size bucket."""

    metric: str
    group: str
    bucket: str
    higher_is_better: bool


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


def tokbench_frame(entries: list[Entry]) -> pd.DataFrame:
    """The view as a table: tokenizer, status, then ``GROUP bucket`` columns (means)."""
    columns = tokbench_columns(entries)
    records = []
    for entry, values in tokbench_rows(entries, columns):
        record: dict[str, Any] = {"id": entry.id, "tokenizer": entry.tokenizer, "status": entry.status}
        for column, value in zip(columns, values):
            record[f"{column.group} {column.bucket}"] = None if value is None else value["mean"]
        records.append(record)
    return pd.DataFrame(records, columns=["id", "tokenizer", "status", *[f"{c.group} {c.bucket}" for c in columns]])
