"""Human reports (``report.md``, ``report.html``) and the terminal table, for one run or several.

A report opens with the run header (what was measured, on what, how: tokenizer spec and
checkpoint hash, suites and their fingerprints, resolution policy, protocol, recognizer,
tokbench version and commit, device, date), then the summary table and one table per task.
Every number is written by `tokbench.metrics.formatting` from the metric's declaration (titles,
units, direction arrows, decimals per unit, percentages, "pooled, no interval"); metrics that
were not computed are listed with the reason. The HTML is a styled page, not a data-frame dump.
Plots come from the tasks themselves (`Task.plots`).
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from tokbench.atomic import atomic_write_text
from tokbench.metrics.formatting import direction_arrow, format_entry, format_interval, format_number, format_value
from tokbench.metrics.registry import get_metric, is_registered, metric_label, registration_order
from tokbench.task_registry import get_task

IDENTITY_COLUMN = "identity (OCR on the original)"
NOT_COMPUTED = "not computed"

RESOLUTION_POLICY = {"native": "native size (no resize)"}


@dataclass
class Table:
    """A rectangular table of strings; ``numeric`` columns are right-aligned in HTML and text."""

    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    numeric: set[int] = field(default_factory=set)

    def markdown(self) -> str:
        def cell(text: str) -> str:
            return text.replace("|", "\\|") or " "

        align = ["---:" if i in self.numeric else "---" for i in range(len(self.columns))]
        lines = ["| " + " | ".join(cell(c) for c in self.columns) + " |", "| " + " | ".join(align) + " |"]
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def html(self, css_class: str = "metrics") -> str:
        def th(i: int, text: str) -> str:
            return f'<th class="{"num" if i in self.numeric else ""}">{html.escape(text)}</th>'

        head = "<tr>" + "".join(th(i, c) for i, c in enumerate(self.columns)) + "</tr>"
        body = "".join("<tr>" + "".join(f'<td class="{"num" if i in self.numeric else ""}">{html.escape(v)}</td>'
                                        for i, v in enumerate(row)) + "</tr>" for row in self.rows)
        return f'<table class="{css_class}"><thead>{head}</thead><tbody>{body}</tbody></table>'

    def text(self) -> str:
        widths = [max([len(c)] + [len(r[i]) for r in self.rows]) for i, c in enumerate(self.columns)]

        def line(cells: list[str]) -> str:
            return "  ".join(c.rjust(w) if i in self.numeric else c.ljust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        return "\n".join([line(self.columns), line(["-" * w for w in widths])] + [line(r) for r in self.rows])


# -- the run header ----------------------------------------------------------------------
def _resolution_policy(resolution: str | None) -> str:
    if not resolution:
        return "—"
    if resolution in RESOLUTION_POLICY:
        return RESOLUTION_POLICY[resolution]
    if resolution.startswith("letterbox:"):
        n = resolution.split(":", 1)[1]
        return f"letterbox {n} (padded to a square, scaled to {n}x{n}, restored after)"
    return f"{resolution} (shorter side resized to {resolution}, center crop {resolution}x{resolution})"


def _recognizer(run: dict) -> str:
    found = []
    for task, block in run["tasks"].items():
        protocol = (block.get("extra") or {}).get("protocol")
        if isinstance(protocol, dict) and protocol.get("ocr"):
            rule = protocol.get("text_protocol")
            found.append(f"{protocol['ocr']}" + (f" ({rule} word rules)" if rule else ""))
    return "; ".join(dict.fromkeys(found)) or "— (no text task)"


def _protocol(run: dict) -> str:
    protocol = run.get("protocol")
    if isinstance(protocol, dict) and protocol.get("name"):
        return str(protocol["name"])
    return "none (tokbench's own settings)"


def header_fields(run: dict) -> dict[str, str]:
    """The run header: what was measured, on what, and how (one line each)."""
    tok = run["tokenizer"]
    sha = tok.get("checkpoint_sha256")
    datasets = "; ".join(f"{d.get('name', '?')} ({d.get('source', '?')}, {format_number(d.get('num_images'), 6)} images, "
                         f"fingerprint {str(d.get('fingerprint', ''))[:12]})" for d in run.get("datasets", []))
    resolutions = dict.fromkeys(d.get("resolution") for d in run.get("datasets", []))
    commit = (run.get("tokbench") or {}).get("git_commit")
    hw = run.get("hardware") or {}
    device = hw.get("device", "—") + (f" ({hw['gpu']})" if hw.get("gpu") else "")
    return {
        "tokenizer": f"{tok['name']} ({tok.get('family', '?')}, {tok.get('kind', '?')}, "
                     f"{format_number(tok.get('parameters'), 6)} parameters)",
        "checkpoint SHA-256": sha[:16] + "…" if sha else "none (no weights file)",
        "suites": datasets or "—",
        "resolution": "; ".join(_resolution_policy(r) for r in resolutions) or "—",
        "protocol": _protocol(run),
        "recognizer": _recognizer(run),
        "tokbench": f"{(run.get('tokbench') or {}).get('version', '?')}"
                    + (f" (commit {commit[:10]})" if commit else " (commit unknown)"),
        "device": device,
        "date": run.get("created", "—"),
    }


def _run_labels(runs: list[dict]) -> list[str]:
    labels = []
    for i, run in enumerate(runs):
        name = run["tokenizer"]["name"]
        labels.append(name if name not in labels else f"{name} #{i + 1}")
    return labels


def header_table(runs: list[dict]) -> Table:
    fields = [header_fields(r) for r in runs]
    table = Table(["", *_run_labels(runs)])
    for key in fields[0]:
        table.rows.append([key, *[f[key] for f in fields]])
    return table


# -- the summary and task tables ---------------------------------------------------------
def _rate_cells(run: dict) -> dict[str, str]:
    tok = run["tokenizer"]
    where = f" @ {tok['rate_resolution']}" if tok.get("rate_resolution") else ""
    bits = tok.get("bits_per_image")
    return {f"bits / image{where}": f"{bits:,.0f}" if bits is not None else "— (continuous)",
            # codecs have no fixed token count: their size is the coded bytes
            f"tokens / image{where}": "variable" if tok.get("tokens_per_image") is None
            else f"{tok['tokens_per_image']:,.0f}"}


def summary_table(runs: list[dict]) -> tuple[Table, list[str]]:
    """One row per task and metric (title, unit and ↑/↓), one column per run (value [95% CI]),
    the rate on top, an identity column where a task reports identity bounds; and the notes
    naming each metric that was not computed and why."""
    cells: dict[str, dict[int, str]] = {}
    identity: dict[str, str] = {}
    reasons: dict[str, list[str]] = {}  # one note per reason, naming every metric it applies to
    labels = _run_labels(runs)
    computed = {m for run in runs for block in run["tasks"].values() for m in block["metrics"]}
    for i, run in enumerate(runs):
        for key, value in _rate_cells(run).items():
            cells.setdefault(key, {})[i] = value
        for task, block in run["tasks"].items():
            bound = (block.get("extra") or {}).get("identity_upper_bound", {})
            skipped = block.get("skipped_metrics", {})
            for metric in registration_order([*block["metrics"], *skipped]):
                entry = block["metrics"].get(metric)
                key = f"{task}: {metric_label(metric)} {direction_arrow(metric, (entry or {}).get('higher_is_better'))}"
                if entry is None:
                    where = f"{task}: {metric_label(metric)}" + (f" ({labels[i]})" if len(runs) > 1 else "")
                    reasons.setdefault(skipped[metric], []).append(where)
                    # a row where another run has the value, or where weights would compute it
                    if metric in computed or (is_registered(metric) and get_metric(metric).weights):
                        cells.setdefault(key, {})[i] = NOT_COMPUTED
                    continue
                cells.setdefault(key, {})[i] = format_entry(metric, entry)
                if bound.get(metric):
                    identity.setdefault(key, format_entry(metric, bound[metric]))
    notes = [f"{NOT_COMPUTED}: {', '.join(where)} — {reason}" for reason, where in reasons.items()]
    columns = ["metric", *labels] + ([IDENTITY_COLUMN] if identity else [])
    table = Table(columns, numeric=set(range(1, len(columns))))
    for key, by_run in cells.items():
        table.rows.append([key, *[by_run.get(i, "") for i in range(len(runs))]]
                          + ([identity.get(key, "")] if identity else []))
    return table, notes


def summary_text(runs: list[dict]) -> str:
    """The terminal table: the summary and, below it, every metric that was not computed and why."""
    table, notes = summary_table(runs)
    return "\n".join([table.text(), *notes])


def task_table(block: dict) -> Table:
    """A task's metrics: title, ↑/↓, value, 95% CI (or pooled), identity bound, n."""
    bound = (block.get("extra") or {}).get("identity_upper_bound", {})
    columns = ["metric", "↑↓", "value", "95% CI"] + ([IDENTITY_COLUMN] if bound else []) + ["n"]
    table = Table(columns, numeric={2, 3, len(columns) - 1} | ({4} if bound else set()))
    for name in registration_order(block["metrics"]):
        entry = block["metrics"][name]
        row = [metric_label(name), direction_arrow(name, entry.get("higher_is_better")),
               format_value(name, entry["mean"]), format_interval(name, entry)]
        if bound:
            row.append(format_entry(name, bound.get(name)))
        row.append(f"{entry['n']:,}")
        table.rows.append(row)
    return table


def _plots(out: Path, runs: list[dict]) -> dict[str, str]:
    """Every task's report plots, as ``title -> path relative to out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def new_figure(figsize: tuple[float, float] = (6.4, 4.2)):
        return plt.subplots(figsize=figsize)

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
        title = f"{task} — {block['dataset']} ({block['num_images']:,} images)"
        table = task_table(block)
        md += [f"## {title}", "", table.markdown(), ""]
        body += [f"<h2>{html.escape(title)}</h2>", table.html()]
        for metric, reason in block["skipped_metrics"].items():
            md.append(f"- {metric_label(metric)} {NOT_COMPUTED}: {reason}")
            body.append(f'<p class="note">{html.escape(metric_label(metric))} {NOT_COMPUTED}: {html.escape(reason)}</p>')
        for skipped in block["skipped"]:
            md.append(f"- skipped file `{skipped['file']}`: {skipped['reason']}")
            body.append(f'<p class="note">skipped file <code>{html.escape(skipped["file"])}</code>: '
                        f"{html.escape(skipped['reason'])}</p>")
        if task in grids:
            grid = grids[task]
            md += ["", f"![{grid['caption']}]({grid['path']})", "", f"*{grid['caption']}*", ""]
            body.append(f'<figure><img src="{html.escape(grid["path"])}" alt="{html.escape(grid["caption"])}">'
                        f"<figcaption>{html.escape(grid['caption'])}</figcaption></figure>")
    return md, body


STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:14px}
th,td{padding:4px 10px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top}
thead th{background:#f3f5f8;border-bottom:2px solid #c9d0da}
tbody tr:nth-child(even){background:#fafbfc} td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
table.header td:first-child{font-weight:600;white-space:nowrap;color:#444}
p.note{color:#8a4b00;margin:.2em 0;font-size:13px} figure{margin:1em 0} img{max-width:100%}
figcaption{font-size:13px;color:#555}
"""


def write_report(out: Path, runs: list[dict], grids: dict[str, dict] | None = None) -> None:
    """Write ``report.md`` and ``report.html`` (header, tables, plots, captioned grids) into ``out``."""
    out = Path(out)
    plots = _plots(out, runs)
    header = header_table(runs)
    summary, notes = summary_table(runs)
    legend = "value [95% confidence interval]; ↑ higher is better, ↓ lower is better"
    md = ["# tokbench report", "", header.markdown(), "", "## Summary", "", legend, "", summary.markdown(), ""]
    md += [f"- {n}" for n in notes] + ([""] if notes else [])
    body = ["<h1>tokbench report</h1>", header.html("header"), "<h2>Summary</h2>", f"<p>{html.escape(legend)}</p>",
            summary.html()]
    body += [f'<p class="note">{html.escape(n)}</p>' for n in notes]
    if len(runs) == 1:
        sections_md, sections_html = _single_run_sections(runs[0], grids or {})
        md += sections_md
        body += sections_html
    for title, path in plots.items():
        md += [f"## {title}", "", f"![{title}]({path})", ""]
        body += [f"<h2>{html.escape(title)}</h2>", f'<img src="{html.escape(path)}" alt="{html.escape(title)}">']
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>tokbench report</title>"
            f"<style>{STYLE}</style></head><body>" + "\n".join(body) + "</body></html>\n")
    atomic_write_text(out / "report.html", page)
