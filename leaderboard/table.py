"""The leaderboard as a pandas table, for ``tokbench leaderboard show`` (table, Markdown, CSV, HTML)."""
from __future__ import annotations

import pandas as pd

from tokbench.leaderboard.render import metric_order, number, task_order
from tokbench.leaderboard.store import Entry
from tokbench.leaderboard.tokbench_view import tokbench_frame

BASE_COLUMNS = ["id", "tokenizer", "family", "kind", "status", "tokens_per_image", "bits_per_image", "parameters"]
FORMATS = ("table", "markdown", "csv", "html")


def entries_frame(entries: list[Entry], task: str | None = None) -> pd.DataFrame:
    """One row per entry, numeric: base columns, then ``task.metric`` means and ``.ci_low`` / ``.ci_high``."""
    tasks = [task] if task else task_order({t for e in entries for t in e.metrics})
    rows = []
    columns = list(BASE_COLUMNS)
    for t in tasks:
        for m in metric_order(t, {m for e in entries for m in e.metrics.get(t, {})}):
            columns += [f"{t}.{m}", f"{t}.{m}.ci_low", f"{t}.{m}.ci_high"]
    for e in entries:
        row = {c: getattr(e, c) for c in BASE_COLUMNS}
        for t in tasks:
            for m, v in e.metrics.get(t, {}).items():
                row.update({f"{t}.{m}": v["mean"], f"{t}.{m}.ci_low": v["ci95"][0], f"{t}.{m}.ci_high": v["ci95"][1]})
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """For reading: each metric as ``mean [low, high]``, numbers shortened, empty cells as ``—``."""
    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        if column.endswith((".ci_low", ".ci_high")):
            continue
        if f"{column}.ci_low" in frame.columns:
            out[column] = [("—" if pd.isna(m) else f"{number(m)} [{number(lo)}, {number(hi)}]")
                           for m, lo, hi in zip(frame[column], frame[f"{column}.ci_low"], frame[f"{column}.ci_high"])]
        else:
            out[column] = [("—" if v is None or (isinstance(v, float) and pd.isna(v)) else
                            (number(v) if column != "id" and isinstance(v, (int, float)) else str(v)))
                           for v in frame[column]]
    return out


def format_table(entries: list[Entry], fmt: str, task: str | None = None) -> str:
    """The entries in one of :data:`FORMATS`."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}")
    frame = entries_frame(entries, task)
    if fmt == "csv":
        return frame.to_csv(index=False)
    shown = display_frame(frame)
    if fmt == "markdown":
        return shown.to_markdown(index=False)
    if fmt == "html":
        return shown.to_html(index=False, escape=True, border=0, classes="tokbench-leaderboard")
    return shown.to_string(index=False) if len(shown) else "(no entries)"


def format_tokbench(entries: list[Entry], fmt: str) -> str:
    """The TokBench-form view (`tokbench.leaderboard.tokbench_view`) in one of :data:`FORMATS`."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}")
    frame = tokbench_frame(entries)
    if fmt == "csv":
        return frame.to_csv(index=False)
    shown = frame.astype(object).map(lambda v: "—" if v is None or (isinstance(v, float) and pd.isna(v))
                                     else number(v) if isinstance(v, float) else str(v))
    if fmt == "markdown":
        return shown.to_markdown(index=False)
    if fmt == "html":
        return shown.to_html(index=False, escape=True, border=0, classes="tokbench-view")
    return shown.to_string(index=False) if len(shown) else "(no entries report T-ACC, T-NED or F-Sim)"
