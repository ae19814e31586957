"""Detail: image quality plus band energy, grating modulation (resolved frequency) and edge F1."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

from tokbench.imageio import tensor_to_uint8
from tokbench.metrics.detail import NUM_BANDS, band_energy_ratios, edge_f1, energy_kept, modulation_ratio, resolved_frequency
from tokbench.metrics.stats import mean_ci95
from tokbench.tasks.base import IMAGE_QUALITY, MetricContext, Pair, Task, TaskSummary, image_quality_rows, metric_entry


class DetailTask(Task):
    name, default_suite, primary = "detail", "detail", "energy_kept"
    headline = ("energy_kept", "resolved_frequency", "edge_f1", "psnr")
    metrics = (*IMAGE_QUALITY, "energy_kept", "resolved_frequency", "edge_f1")

    def score(self, pairs: list[Pair], ctx: MetricContext) -> list[dict]:
        rows = image_quality_rows(pairs, ctx)
        for row, pair in zip(rows, pairs):
            a, b = tensor_to_uint8(pair.original), tensor_to_uint8(pair.reconstruction)
            ratios = band_energy_ratios(a, b)
            row["energy_kept"] = energy_kept(ratios)
            row.update({f"band_{i}": (None if not np.isfinite(r) else float(r)) for i, r in enumerate(ratios)})
            row["edge_f1"] = edge_f1(a, b)
            meta = pair.item.meta
            if meta.get("pattern") == "grating":
                row["modulation"] = modulation_ratio(a, b, meta["frequency"], meta["orientation"])
                row["frequency"], row["orientation"] = meta["frequency"], meta["orientation"]
        return rows

    def aggregate(self, rows: list[dict], ctx: MetricContext) -> TaskSummary:
        summary = super().aggregate(rows, ctx)
        by_orientation: dict[float, dict[float, float]] = defaultdict(dict)
        for r in rows:
            if r.get("modulation") is not None:
                by_orientation[r["orientation"]][r["frequency"]] = r["modulation"]
        if by_orientation:
            per_orientation = [resolved_frequency(m) for _, m in sorted(by_orientation.items())]
            summary.metrics["resolved_frequency"] = metric_entry("resolved_frequency", per_orientation)
            summary.extra["modulation_by_orientation"] = {str(k): dict(sorted(v.items())) for k, v in by_orientation.items()}
        else:
            summary.skipped_metrics["resolved_frequency"] = "no grating images in the dataset (built-in detail suite only)"
        bands = [[r.get(f"band_{i}") for r in rows if r.get(f"band_{i}") is not None] for i in range(NUM_BANDS)]
        edges = np.linspace(0, 0.5, NUM_BANDS + 1)
        summary.extra["band_energy_ratio"] = [
            {"band": [float(edges[i]), float(edges[i + 1])], **mean_ci95(vals, (0.0, float("inf")))} for i, vals in enumerate(bands)
        ]
        return summary

    @classmethod
    def plots(cls, runs: list[dict], plot_dir: Path, new_figure: Callable) -> dict[str, str]:
        """Energy kept per frequency band, one curve per run."""
        curves = [(r["tokenizer"]["name"], r["tasks"][cls.name]["extra"].get("band_energy_ratio"))
                  for r in runs if cls.name in r["tasks"]]
        curves = [(name, curve) for name, curve in curves if curve]
        if not curves:
            return {}
        fig, ax = new_figure()
        for name, curve in curves:
            xs = [(b["band"][0] + b["band"][1]) / 2 for b in curve if b["mean"] is not None]
            ax.plot(xs, [b["mean"] for b in curve if b["mean"] is not None], marker="o", label=name)
        ax.axhline(1.0, color="gray", lw=0.5), ax.set_xlabel("cycles / pixel"), ax.set_ylabel("energy ratio (rec / orig)")
        ax.set_title("energy per frequency band"), ax.legend(fontsize=7)
        fig.tight_layout(), fig.savefig(plot_dir / "band_energy.png", dpi=110)
        return {"Energy per frequency band (detail)": "band_energy.png"}
