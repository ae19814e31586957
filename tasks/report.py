"""Human reports (``report.md`` and ``report.html``) for one run or a comparison of runs."""
from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from tokbench.checkpoint import atomic_write_text


GRID_CAPTIONS = {"generation": "samples of the AR prior fitted on the tokens, decoded"}


def _fmt(metric: dict) -> str:
    lo, hi = metric["ci95"]
    return f"{metric['mean']:.4g} [{lo:.4g}, {hi:.4g}]"


def summary_frame(runs: list[dict]) -> pd.DataFrame:
    """One row per task/metric, one column per run: ``mean [95% CI]``.

    Text metrics that have an identity upper bound (OCR read on the original image) get a
    second row, ``... (identity)``, so OCR's own error is always shown beside the tokenizer's.
    """
    columns: dict[str, dict[str, str]] = {}
    order: list[str] = ["bits / image", "tokens / image"]
    for i, r in enumerate(runs):
        name = r["tokenizer"]["name"]
        label = name if name not in columns else f"{name} #{i + 1}"
        col = {"bits / image": _num(r["tokenizer"]["bits_per_image"]),
               # codecs have no fixed token count: their size is the coded bytes
               "tokens / image": _num(r["tokenizer"]["tokens_per_image"], missing="variable")}
        for task, block in r["tasks"].items():
            bound = block.get("extra", {}).get("identity_upper_bound", {})
            for metric, value in block["metrics"].items():
                for key, entry in ((f"{task}: {metric}", value), (f"{task}: {metric} (identity)", bound.get(metric))):
                    if entry is None or entry.get("mean") is None:
                        continue
                    col[key] = _fmt(entry)
                    if key not in order:
                        order.append(key)
        columns[label] = col
    frame = pd.DataFrame({label: [col.get(k, "") for k in order] for label, col in columns.items()}, index=order)
    frame.index.name = "metric"
    return frame


def _num(value, missing: str = "") -> str:
    return missing if value is None else f"{value:.6g}"


def task_frame(block: dict) -> pd.DataFrame:
    return pd.DataFrame([{"metric": name, "mean": m["mean"], "ci95_low": m["ci95"][0], "ci95_high": m["ci95"][1],
                          "n": m["n"], "better": "higher" if m["higher_is_better"] else "lower"}
                         for name, m in block["metrics"].items()])


def _plots(out: Path, runs: list[dict]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = {}
    (out / "plots").mkdir(parents=True, exist_ok=True)
    if len(runs) > 1 and all("reconstruction" in r["tasks"] for r in runs):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for r in runs:
            m = r["tasks"]["reconstruction"]["metrics"].get("psnr")
            if m and r["tokenizer"]["bits_per_image"]:
                ax.errorbar(r["tokenizer"]["bits_per_image"], m["mean"], yerr=[[m["mean"] - m["ci95"][0]], [m["ci95"][1] - m["mean"]]], fmt="o")
                ax.annotate(r["tokenizer"]["name"], (r["tokenizer"]["bits_per_image"], m["mean"]), fontsize=7)
        ax.set_xscale("log"), ax.set_xlabel("bits per image"), ax.set_ylabel("PSNR (dB)"), ax.set_title("rate-distortion")
        fig.tight_layout(), fig.savefig(out / "plots" / "rate_distortion.png", dpi=110), plt.close(fig)
        made["Rate-distortion (PSNR vs bits per image)"] = "plots/rate_distortion.png"
    bands = [(r["tokenizer"]["name"], r["tasks"]["detail"]["extra"].get("band_energy_ratio")) for r in runs if "detail" in r["tasks"]]
    if bands:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, curve in bands:
            xs = [(b["band"][0] + b["band"][1]) / 2 for b in curve if b["mean"] is not None]
            ax.plot(xs, [b["mean"] for b in curve if b["mean"] is not None], marker="o", label=name)
        ax.axhline(1.0, color="gray", lw=0.5), ax.set_xlabel("cycles / pixel"), ax.set_ylabel("energy ratio (rec / orig)")
        ax.set_title("energy per frequency band"), ax.legend(fontsize=7)
        fig.tight_layout(), fig.savefig(out / "plots" / "band_energy.png", dpi=110), plt.close(fig)
        made["Energy per frequency band (detail)"] = "plots/band_energy.png"
    cers = [(r["tokenizer"]["name"], r["tasks"]["text"]["extra"].get("cer_gt_by_font_size")) for r in runs if "text" in r["tasks"]]
    if any(c for _, c in cers):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, by_size in cers:
            if by_size:
                ax.plot([float(k) for k in by_size], [v["mean"] for v in by_size.values()], marker="o", label=name)
        ax.set_xlabel("font size (px)"), ax.set_ylabel("CER vs ground truth"), ax.set_title("CER by font size"), ax.legend(fontsize=7)
        fig.tight_layout(), fig.savefig(out / "plots" / "cer_by_font_size.png", dpi=110), plt.close(fig)
        made["CER by font size (text)"] = "plots/cer_by_font_size.png"
    return made


def write_report(out: Path, runs: list[dict], grids: dict[str, str] | None = None) -> None:
    """Write ``report.md`` and ``report.html`` (tables, plots, grids) into ``out``."""
    out = Path(out)
    plots = _plots(out, runs)
    md, body = ["# tokbench report", ""], ["<h1>tokbench report</h1>"]
    summary = summary_frame(runs)
    md += ["## Summary", "", "mean [95% confidence interval]; `(identity)`: the same score with OCR on the original",
           "", summary.to_markdown(), ""]
    body += ["<h2>Summary</h2>", summary.to_html(escape=True)]
    if len(runs) == 1:
        run = runs[0]
        for task, block in run["tasks"].items():
            title = f"{task} — {block['dataset']} ({block['num_images']} images)"
            frame = task_frame(block)
            md += [f"## {title}", "", frame.to_markdown(index=False), ""]
            body += [f"<h2>{html.escape(title)}</h2>", frame.to_html(index=False, escape=True)]
            for metric, reason in block["skipped_metrics"].items():
                md.append(f"- `{metric}` not reported: {reason}")
                body.append(f"<p><code>{html.escape(metric)}</code> not reported: {html.escape(reason)}</p>")
            bound = block["extra"].get("identity_upper_bound")
            if bound:
                frame = pd.DataFrame([{"metric": k, "identity (OCR on the original)": _fmt({**v, "ci95": v["ci95"]})} for k, v in bound.items() if v["mean"] is not None])
                md += ["", "Identity upper bound (OCR's own error):", "", frame.to_markdown(index=False), ""]
                body += ["<p>Identity upper bound (OCR's own error):</p>", frame.to_html(index=False, escape=True)]
            for skipped in block["skipped"]:
                md.append(f"- skipped file `{skipped['file']}`: {skipped['reason']}")
                body.append(f"<p>skipped file <code>{html.escape(skipped['file'])}</code>: {html.escape(skipped['reason'])}</p>")
            if grids and task in grids:
                caption = GRID_CAPTIONS.get(task, "worst / median / best — original | reconstruction | difference x4")
                md += ["", f"![{task}: {caption}]({grids[task]})", ""]
                body.append(f'<p><img src="{html.escape(grids[task])}" alt="{html.escape(task)} grid"></p>')
    for title, path in plots.items():
        md += [f"## {title}", "", f"![{title}]({path})", ""]
        body += [f"<h2>{html.escape(title)}</h2>", f'<img src="{html.escape(path)}" alt="{html.escape(title)}">']
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>tokbench report</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")
    atomic_write_text(out / "report.html", page)
