"""What a benchmark task is: per-image scoring of (original, reconstruction) pairs, then aggregation."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from tokbench.metrics.image import psnr_8bit, ssim_8bit
from tokbench.metrics.stats import mean_ci95
from tokbench.results import METRIC_RANGES
from tokbench.tasks.data import Item


@dataclass
class Pair:
    """One scored image: original and reconstruction at evaluation resolution (content only)."""

    item: Item
    original: torch.Tensor  # (3, H, W) in [0, 1], 8-bit levels
    reconstruction: torch.Tensor  # same shape, 8-bit levels
    scale: float = 1.0  # evaluation pixels per original pixel (text boxes)
    offset: tuple[int, int] = (0, 0)  # (top, left) of the content inside the evaluated image


@dataclass
class MetricContext:
    """Shared metric models for one run (built once, only for metrics not skipped)."""

    lpips: torch.nn.Module | None = None
    fid_features: object | None = None  # callable uint8 (B,3,H,W) -> (B, F)
    skipped: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    fid_min_images: int = 1000
    workers: int = 0  # worker processes for CPU-heavy per-image work (OCR); 0: in this process
    pools: dict = field(default_factory=dict)  # name -> executor, created on first use
    timers: dict = field(default_factory=dict)  # seconds spent in stages a task times itself (ocr_s)

    def close(self) -> None:
        """Shut down the worker pools (at the end of a run, also after an error)."""
        for pool in self.pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        self.pools.clear()


class Task:
    name = "task"
    default_suite = ""
    # metric -> higher is better
    directions: dict[str, bool] = {}
    primary = "psnr"

    def score(self, pairs: list[Pair], ctx: MetricContext) -> list[dict]:
        raise NotImplementedError

    def aggregate(self, rows: list[dict], ctx: MetricContext) -> tuple[dict, dict, dict]:
        """(metrics, extra, skipped_metrics) from the per-image rows."""
        metrics = {}
        for name, higher in self.directions.items():
            values = [r[name] for r in rows if r.get(name) is not None and np.isfinite(r[name])]
            if values:
                metrics[name] = metric_summary(name, values, higher)
        return metrics, {}, {}


def metric_summary(name: str, values: list[float], higher_is_better: bool) -> dict:
    """Mean, 95% CI (clipped to the metric's valid range), n and direction."""
    bounds = METRIC_RANGES.get(name, (-float("inf"), float("inf")))[:2]
    return {**mean_ci95(values, bounds), "higher_is_better": higher_is_better}


def image_quality_rows(pairs: list[Pair], ctx: MetricContext) -> list[dict]:
    """PSNR, SSIM and (unless skipped) LPIPS for each pair; images of one size are batched."""
    rows = []
    for pair in pairs:
        x, y = pair.original[None], pair.reconstruction[None]
        row = {"psnr": float(psnr_8bit(x, y)[0]), "ssim": float(ssim_8bit(x, y)[0])}
        if ctx.lpips is not None:
            row["lpips"] = float(ctx.lpips(x.to(ctx.device), y.to(ctx.device))[0])
        rows.append(row)
    return rows


IMAGE_QUALITY_DIRECTIONS = {"psnr": True, "ssim": True, "lpips": False}
