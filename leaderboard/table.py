"""The leaderboard as a pandas table, for ``tokbench leaderboard show`` (table, Markdown, CSV, HTML)."""
from __future__ import annotations

import pandas as pd

from tokbench.leaderboard.render import metric_order, number, task_order
from tokbench.leaderboard.store import Entry
from tokbench.leaderboard.tokbench_view import PERCENT_GROUPS, tokbench_frame

BASE_COLUMNS = ["id", "tokenizer", "family", "kind", "status", "tokens_per_image", "bits_per_image", "parameters"]
FORMATS = ("table", "markdown", "csv", "html")


def entries_frame(entries: list[Entry], task: str | None = None) -> pd.DataFrame:
    """One row per entry, numeric: base columns, each task's setting (``task.setting``: suite,
    protocol, resolution), then ``task.metric`` means and ``.ci_low`` / ``.ci_high``.

    With ``task``, rows are grouped by that task's setting (largest group first, the given
    order kept inside a group): scores of different test sets are never one ranked column."""
    tasks = [task] if task else task_order({t for e in entries for t in e.metrics})
    rows = []
    columns = list(BASE_COLUMNS) + [f"{t}.setting" for t in tasks]
    for t in tasks:
        for m in metric_order(t, {m for e in entries for m in e.metrics.get(t, {})}):
            columns += [f"{t}.{m}", f"{t}.{m}.ci_low", f"{t}.{m}.ci_high"]
    if task:
        sizes: dict[str, int] = {}
        for e in entries:
            key = (s := e.setting(task)) and s.label()
            sizes[key] = sizes.get(key, 0) + 1
        order = {key: i for i, key in enumerate(sorted(sizes, key=lambda k: (-sizes[k], k or "")))}
        entries = sorted(entries, key=lambda e: order[(s := e.setting(task)) and s.label()])
    for e in entries:
        row = {c: getattr(e, c) for c in BASE_COLUMNS}
        for t in tasks:
            setting = e.setting(t)
            row[f"{t}.setting"] = setting.label() if setting else None
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
    percent = {c for c in frame.columns if c.split(" ")[0] in PERCENT_GROUPS}

    def cell(column: str, value: object) -> str:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return "—"
        if column in percent:  # as TokBench's table prints them
            return f"{100.0 * value:.2f}"
        return number(value) if isinstance(value, float) else str(value)

    shown = pd.DataFrame({(f"{c} (%)" if c in percent else c): [cell(c, v) for v in frame[c]] for c in frame.columns})
    if fmt == "markdown":
        return shown.to_markdown(index=False)
    if fmt == "html":
        return shown.to_html(index=False, escape=True, border=0, classes="tokbench-view")
    return shown.to_string(index=False) if len(shown) else "(no entries report T-ACC, T-NED or F-Sim)"
