"""Human reports (``report.md``, ``report.html``) and the terminal table, for one run or several.

Everything shown comes from the metric registry: display titles and units instead of raw
keys, the registered direction, values at 4 and intervals at 3 significant digits, and the
identity bound (the same score with OCR on the original image) as a column beside the value.
Plots come from the tasks themselves (`Task.plots`).
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd

from tokbench.atomic import atomic_write_text
from tokbench.metrics.registry import get_metric, is_registered, metric_label, registration_order
from tokbench.task_registry import get_task

IDENTITY_COLUMN = "identity (OCR on the original)"


def significant(value: float | None, digits: int = 4) -> str:
    """``31.84``, ``0.003843``, ``14,336``; ``—`` for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if value != 0 and abs(value) >= 10**digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def format_entry(entry: dict | None) -> str:
    """``mean [low, high]``: the mean at 4, the interval at 3 significant digits."""
    if not entry or entry.get("mean") is None:
        return ""
    lo, hi = entry["ci95"]
    if lo == hi == entry["mean"]:
        return significant(entry["mean"])
    return f"{significant(entry['mean'])} [{significant(lo, 3)}, {significant(hi, 3)}]"


def _rate_rows(run: dict) -> dict[str, str]:
    tok = run["tokenizer"]
    where = f" @ {tok['rate_resolution']}" if tok.get("rate_resolution") else ""
    return {f"bits / image{where}": significant(tok["bits_per_image"], 6),
            # codecs have no fixed token count: their size is the coded bytes
            f"tokens / image{where}": "variable" if tok["tokens_per_image"] is None else significant(tok["tokens_per_image"], 6)}


def summary_frame(runs: list[dict]) -> pd.DataFrame:
    """One row per task and metric, one column per run (``mean [95% CI]``), the rate on top,
    and an identity column where a task reports identity bounds."""
    columns: dict[str, dict[str, str]] = {}
    identity: dict[str, str] = {}
    order: list[str] = []
    for i, run in enumerate(runs):
        name = run["tokenizer"]["name"]
        label = name if name not in columns else f"{name} #{i + 1}"
        col = dict(_rate_rows(run))
        order += [k for k in col if k not in order]
        for task, block in run["tasks"].items():
            bound = block.get("extra", {}).get("identity_upper_bound", {})
            for metric in registration_order(block["metrics"]):
                key = f"{task}: {metric_label(metric)}"
                col[key] = format_entry(block["metrics"][metric])
                identity.setdefault(key, format_entry(bound.get(metric)))
                if key not in order:
                    order.append(key)
        columns[label] = col
    frame = pd.DataFrame({label: [col.get(k, "") for k in order] for label, col in columns.items()}, index=order)
    if any(identity.values()):
        frame[IDENTITY_COLUMN] = [identity.get(k, "") for k in order]
    frame.index.name = "metric"
    return frame


def task_frame(block: dict) -> pd.DataFrame:
    """A task's metrics: title, value with interval, identity bound, n, direction (from the registry)."""
    bound = block.get("extra", {}).get("identity_upper_bound", {})
    rows = []
    for name in registration_order(block["metrics"]):
        entry = block["metrics"][name]
        higher = get_metric(name).higher_is_better if is_registered(name) else entry["higher_is_better"]
        rows.append({"metric": metric_label(name), "mean [95% CI]": format_entry(entry),
                     **({IDENTITY_COLUMN: format_entry(bound.get(name))} if bound else {}),
                     "n": entry["n"], "better": "higher" if higher else "lower"})
    return pd.DataFrame(rows)


def _plots(out: Path, runs: list[dict]) -> dict[str, str]:
    """Every task's report plots, as ``title -> path relative to out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def new_figure():
        return plt.subplots(figsize=(5, 3.5))

    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    made = {}
    for task_name in dict.fromkeys(t for r in runs for t in r["tasks"]):
        try:
            task = get_task(task_name)
        except ValueError:
            continue  # results of a task whose plug-in is not installed here: no plots for it
        made.update({title: f"plots/{name}" for title, name in task.plots(runs, plot_dir, new_figure).items()})
        plt.close("all")
    return made


def _single_run_sections(run: dict, grids: dict[str, dict]) -> tuple[list[str], list[str]]:
    md, body = [], []
    for task, block in run["tasks"].items():
        title = f"{task} — {block['dataset']} ({block['num_images']} images)"
        frame = task_frame(block)
        md += [f"## {title}", "", frame.to_markdown(index=False), ""]
        body += [f"<h2>{html.escape(title)}</h2>", frame.to_html(index=False, escape=True)]
        for metric, reason in block["skipped_metrics"].items():
            md.append(f"- {metric_label(metric)} not reported: {reason}")
            body.append(f"<p>{html.escape(metric_label(metric))} not reported: {html.escape(reason)}</p>")
        for skipped in block["skipped"]:
            md.append(f"- skipped file `{skipped['file']}`: {skipped['reason']}")
            body.append(f"<p>skipped file <code>{html.escape(skipped['file'])}</code>: {html.escape(skipped['reason'])}</p>")
        if task in grids:
            grid = grids[task]
            md += ["", f"![{grid['caption']}]({grid['path']})", "", f"*{grid['caption']}*", ""]
            body.append(f'<figure><img src="{html.escape(grid["path"])}" alt="{html.escape(grid["caption"])}">'
                        f"<figcaption>{html.escape(grid['caption'])}</figcaption></figure>")
    return md, body


def write_report(out: Path, runs: list[dict], grids: dict[str, dict] | None = None) -> None:
    """Write ``report.md`` and ``report.html`` (tables, plots, captioned grids) into ``out``."""
    out = Path(out)
    plots = _plots(out, runs)
    md, body = ["# tokbench report", ""], ["<h1>tokbench report</h1>"]
    summary = summary_frame(runs)
    md += ["## Summary", "", "mean [95% confidence interval]", "", summary.to_markdown(), ""]
    body += ["<h2>Summary</h2>", summary.to_html(escape=True)]
    if len(runs) == 1:
        sections_md, sections_html = _single_run_sections(runs[0], grids or {})
        md += sections_md
        body += sections_html
    for title, path in plots.items():
        md += [f"## {title}", "", f"![{title}]({path})", ""]
        body += [f"<h2>{html.escape(title)}</h2>", f'<img src="{html.escape(path)}" alt="{html.escape(title)}">']
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>tokbench report</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")
    atomic_write_text(out / "report.html", page)
