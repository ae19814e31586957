"""Reconstruction: PSNR, SSIM, LPIPS per image; rFID over the whole dataset when it is large enough.

Task option ``ssim_llamagen`` (set by the ``llamagen-rfid`` protocol preset) adds SSIM as
LlamaGen's tables report it (`tokbench.metrics.image.ssim_llamagen_8bit`) beside the standard one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tokbench.imageio import to_uint8
from tokbench.metrics.fid import fid_from_features
from tokbench.metrics.image import ssim_llamagen_8bit
from tokbench.tasks.base import IMAGE_QUALITY, MetricContext, Pair, Task, TaskSummary, dataset_metric_entry, image_quality_rows


def _features(fn, images: list[torch.Tensor]) -> list[torch.Tensor]:
    """Inception features of each image, one forward pass when all share a size."""
    if len({tuple(x.shape) for x in images}) == 1:
        return list(fn(torch.stack([to_uint8(x) for x in images])))
    return [fn(to_uint8(x)[None])[0] for x in images]


class ReconstructionTask(Task):
    name, default_suite, primary = "reconstruction", "photos", "psnr"
    headline = ("psnr", "ssim", "lpips", "rfid", "ssim_llamagen")
    metrics = (*IMAGE_QUALITY, "ssim_llamagen", "rfid")

    def score(self, pairs: list[Pair], ctx: MetricContext) -> list[dict]:
        rows = image_quality_rows(pairs, ctx)
        if ctx.task_options.get(self.name, {}).get("ssim_llamagen"):
            for row, pair in zip(rows, pairs):
                row["ssim_llamagen"] = float(ssim_llamagen_8bit(pair.original[None], pair.reconstruction[None])[0])
        inception = ctx.networks.get("rfid")
        if inception is not None:
            # arrays, not lists: the row cache stores them as float32 chunks, not as JSON text
            for key, images in (("_fid_real", [p.original for p in pairs]), ("_fid_fake", [p.reconstruction for p in pairs])):
                for row, feats in zip(rows, _features(inception, images)):
                    row[key] = feats.numpy()
        return rows

    def aggregate(self, rows: list[dict], ctx: MetricContext) -> TaskSummary:
        summary = super().aggregate(rows, ctx)
        if ctx.networks.get("rfid") is None:
            return summary
        if len(rows) < ctx.fid_min_images:
            summary.skipped_metrics["rfid"] = (f"only {len(rows)} images; rFID needs at least {ctx.fid_min_images} "
                                               "(--fid-min-images) to be meaningful")
            return summary
        real = np.array([r["_fid_real"] for r in rows])
        fake = np.array([r["_fid_fake"] for r in rows])
        summary.metrics["rfid"] = dataset_metric_entry("rfid", max(0.0, fid_from_features(real, fake)), len(rows))
        summary.extra["rfid_note"] = "dataset-level statistic; the interval is not estimated"
        return summary

    @classmethod
    def plots(cls, runs: list[dict], plot_dir: Path, new_figure: Callable) -> dict[str, str]:
        """Rate-distortion (PSNR vs bits per image at the evaluation resolution) across runs."""
        points = [(r["tokenizer"]["name"], r["tokenizer"]["bits_per_image"], r["tasks"][cls.name]["metrics"].get("psnr"))
                  for r in runs if cls.name in r["tasks"]]
        points = [(name, bits, m) for name, bits, m in points if bits and m]
        if len(points) < 2:
            return {}
        # Large, with each run named in a legend beside the axes (a marker and colour per run) rather
        # than text at the points, where names collide with each other and with the error bars.
        fig, ax = new_figure(figsize=(10, 6))
        markers = "osD^vP*Xh<>"
        for i, (name, bits, m) in enumerate(points):
            ax.errorbar(bits, m["mean"], yerr=[[m["mean"] - m["ci95"][0]], [m["ci95"][1] - m["mean"]]],
                        fmt=markers[i % len(markers)], markersize=8, capsize=4, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("bits per image (log scale)", fontsize=12), ax.set_ylabel("PSNR (dB), mean and 95% CI", fontsize=12)
        ax.set_title("rate-distortion", fontsize=13), ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=10, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
        fig.tight_layout(), fig.savefig(plot_dir / "rate_distortion.png", dpi=130, bbox_inches="tight")
        return {"Rate-distortion (PSNR vs bits per image)": "rate_distortion.png"}
