"""Reconstruction: PSNR, SSIM, LPIPS per image; rFID over the whole dataset when it is large enough."""
from __future__ import annotations

import numpy as np
import torch

from tokbench.metrics.fid import fid_from_features
from tokbench.tasks.base import IMAGE_QUALITY_DIRECTIONS, MetricContext, Pair, Task, image_quality_rows


def to_uint8_batch(x_3HW: torch.Tensor) -> torch.Tensor:
    return x_3HW.clamp(0, 1).mul(255).round().to(torch.uint8)[None]


def _features(fn, images: list[torch.Tensor]) -> list[torch.Tensor]:
    """Inception features of each image, one forward pass when all share a size."""
    if len({tuple(x.shape) for x in images}) == 1:
        return list(fn(torch.cat([to_uint8_batch(x) for x in images])))
    return [fn(to_uint8_batch(x))[0] for x in images]


class ReconstructionTask(Task):
    name, default_suite, primary = "reconstruction", "photos", "psnr"
    directions = dict(IMAGE_QUALITY_DIRECTIONS)

    def score(self, pairs: list[Pair], ctx: MetricContext) -> list[dict]:
        rows = image_quality_rows(pairs, ctx)
        if ctx.fid_features is not None:
            # arrays, not lists: the row cache stores them as float32 chunks, not as JSON text
            for key, images in (("_fid_real", [p.original for p in pairs]), ("_fid_fake", [p.reconstruction for p in pairs])):
                for row, feats in zip(rows, _features(ctx.fid_features, images)):
                    row[key] = feats.numpy()
        return rows

    def aggregate(self, rows: list[dict], ctx: MetricContext):
        metrics, extra, skipped = super().aggregate(rows, ctx)
        if ctx.fid_features is None:
            return metrics, extra, skipped
        if len(rows) < ctx.fid_min_images:
            skipped["rfid"] = (f"only {len(rows)} images; rFID needs at least {ctx.fid_min_images} "
                               "(--fid-min-images) to be meaningful")
            return metrics, extra, skipped
        real = np.array([r["_fid_real"] for r in rows])
        fake = np.array([r["_fid_fake"] for r in rows])
        value = max(0.0, fid_from_features(real, fake))
        # rFID is one number over the dataset: no per-image values, so no interval.
        metrics["rfid"] = {"mean": value, "ci95": [value, value], "n": len(rows), "higher_is_better": False}
        extra["rfid_note"] = "dataset-level statistic; the interval is not estimated"
        return metrics, extra, skipped
