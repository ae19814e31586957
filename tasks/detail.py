"""Detail: image quality plus band energy, grating modulation (resolved frequency) and edge F1."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

from tokbench.imageio import tensor_to_uint8
from tokbench.metrics.detail import (MIN_BAND_SHARE, NUM_BANDS, band_energies_per_pixel, band_energy_ratios, edge_f1,
                                     energy_kept, modulation_ratio, pooled_band_ratios, resolved_frequency)
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
            # per-pixel band energies (private: cached as arrays, not in per_image.csv) for the pooled ratios
            row["_band_orig"], row["_band_rec"] = band_energies_per_pixel(a), band_energies_per_pixel(b)
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
        with_bands = [r for r in rows if r.get("_band_orig") is not None and r.get("_band_rec") is not None]
        pooled = pooled_band_ratios(np.array([r["_band_orig"] for r in with_bands]).reshape(-1, NUM_BANDS),
                                    np.array([r["_band_rec"] for r in with_bands]).reshape(-1, NUM_BANDS))
        edges = np.linspace(0, 0.5, NUM_BANDS + 1)
        summary.extra["band_energy_ratio"] = [
            {"band": [float(edges[i]), float(edges[i + 1])], "mean": p["ratio"], "ci95": p["ci95"], "n": p["n"],
             "excluded": p["excluded"]} for i, p in enumerate(pooled)]
        summary.extra["band_energy_definition"] = (
            "per band: reconstructions' energy summed over the images / originals' (per pixel, luma, Hann window); "
            f"bands where the originals hold < {MIN_BAND_SHARE:.0%} of their energy are excluded "
            f"({sum(p['excluded'] for p in pooled)} of {NUM_BANDS} here)")
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
            kept = [b for b in curve if b.get("mean") is not None and b["mean"] > 0]
            xs = [(b["band"][0] + b["band"][1]) / 2 for b in kept]
            ys = [b["mean"] for b in kept]
            yerr = [[max(y - (b["ci95"][0] or y), 0) for y, b in zip(ys, kept)],
                    [max((b["ci95"][1] or y) - y, 0) for y, b in zip(ys, kept)]]
            excluded = sum(1 for b in curve if b.get("excluded"))
            label = name + (f" ({excluded} band{'s' * (excluded > 1)} excluded: too little original energy)"
                            if excluded else "")
            ax.errorbar(xs, ys, yerr=yerr, marker="o", capsize=3, label=label)
        from matplotlib.ticker import FuncFormatter, NullFormatter

        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # 0.3, 1, 2 rather than 3x10^-1
        low, high = ax.get_ylim()
        # within a decade the minor ticks are the only labels; over several they would overlap
        ax.yaxis.set_major_formatter(plain), ax.yaxis.set_minor_formatter(plain if high / low < 10 else NullFormatter())
        ax.axhline(1.0, color="gray", lw=0.8, ls="--")
        ax.set_xlabel("spatial frequency (cycles / pixel)", fontsize=11)
        ax.set_ylabel("energy ratio, reconstruction / original", fontsize=11)
        ax.set_title("energy per frequency band (pooled over the suite, 95% CI)", fontsize=12)
        ax.grid(True, which="both", alpha=0.3), ax.legend(fontsize=9)
        fig.tight_layout(), fig.savefig(plot_dir / "band_energy.png", dpi=130)
        return {"Energy per frequency band (detail)": "band_energy.png"}
