"""What a benchmark task is, and what the runner hands it.

A task is one class in one module, found through the entry-point group ``tokbench.tasks``
(`tokbench.task_registry`). It declares:

* ``name``, ``default_suite`` (the built-in suite it runs on without ``--data``/``--suite``);
* ``metrics``: the metrics it reports, in display order -- names of registered metrics
  (`tokbench.metrics.catalog`) or `Metric` declarations of its own (a plug-in's new metrics);
* ``primary``: the metric its comparison grid ranks images by;
* ``headline``: the metrics a leaderboard's compact table shows first, in order (the first
  three an entry of the table reports; the others are on the entry's page);
* ``scoring``: ``"per_image"`` (the runner reconstructs every image and calls `score` on
  batches of (original, reconstruction) pairs, caches the rows, then calls `aggregate`) or
  ``"dataset"`` (the runner calls `run_dataset` once, after the per-image tasks, as the
  generation task needs: its score is a model fitted over the whole dataset);
* optionally `plots` for the report and `pinned` settings that a resumed run must share.

Metric weights (LPIPS, Inception) are not a task's business: the runner loads the network of
every weighted metric a task lists into ``MetricContext.networks`` (see `tokbench.metrics`),
and the task reads ``ctx.networks.get(name)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from tokbench.metrics.declaration import Metric
from tokbench.metrics.image import psnr_8bit, ssim_8bit
from tokbench.metrics.registry import get_metric
from tokbench.metrics.stats import mean_ci95
from tokbench.tasks.data import Dataset, Item


@dataclass
class Pair:
    """One scored image: original and reconstruction at evaluation resolution (content only)."""

    item: Item
    original: torch.Tensor  # (3, H, W) in [0, 1], 8-bit levels
    reconstruction: torch.Tensor  # same shape, 8-bit levels
    scale: float = 1.0  # evaluation pixels per original pixel (text boxes)
    offset: tuple[int, int] = (0, 0)  # (top, left) of the original's pixel (0, 0) in these images
    decodings: dict[str, torch.Tensor] = field(default_factory=dict)  # the task's own decodings (`Task.decodings`)
    source_hw: tuple[int, int] | None = None  # the source image's (height, width), before the resolution policy

    def source_size(self) -> tuple[int, int]:
        """The source image's (height, width) (decoded again when the pair was built without it)."""
        return self.source_hw if self.source_hw is not None else tuple(self.item.pixels().shape[:2])


@dataclass
class MetricContext:
    """What a run shares between tasks: metric networks (built once, only for metrics not
    skipped), worker pools, settings and timers."""

    networks: dict[str, Any] = field(default_factory=dict)  # metric name -> its network (LPIPS, Inception features)
    skipped: dict[str, str] = field(default_factory=dict)  # metric name -> why it is not computed
    device: str = "cpu"
    fid_min_images: int = 1000
    workers: int = 0  # worker processes for CPU-heavy per-image work (OCR); 0: in this process
    pools: dict = field(default_factory=dict)  # name -> executor, created on first use
    timers: dict = field(default_factory=dict)  # seconds spent in stages a task times itself (ocr_s)
    resolution: str = "256"  # the run's --resolution
    weights_dir: str | None = None  # the run's --weights-dir (recognizers that load their own weights)
    task_options: dict[str, dict] = field(default_factory=dict)  # task name -> its own options (EvalConfig's)

    def close(self) -> None:
        """Shut down the worker pools (at the end of a run, also after an error)."""
        for pool in self.pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        self.pools.clear()


@dataclass
class TaskSummary:
    """What `Task.aggregate` returns: metric entries, task-specific extras, metrics not reported (and why)."""

    metrics: dict[str, dict] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    skipped_metrics: dict[str, str] = field(default_factory=dict)


def metric_entry(name: str, values: list[float]) -> dict:
    """A metric's results entry from per-image values: mean, 95% CI clipped to the registered
    valid range, n, and the registered direction."""
    metric = get_metric(name)
    return {**mean_ci95(values, metric.bounds), "higher_is_better": metric.higher_is_better}


def dataset_metric_entry(name: str, value: float, n: int) -> dict:
    """A dataset-level metric (rFID, gFID): one value, no interval to estimate."""
    return {"mean": value, "ci95": [value, value], "n": n, "higher_is_better": get_metric(name).higher_is_better}


class Task:
    """Base class of benchmark tasks (see the module docstring)."""

    name = "task"
    default_suite = "photos"
    metrics: tuple[str | Metric, ...] = ()
    primary = "psnr"
    headline: tuple[str, ...] = ()
    scoring = "per_image"

    @classmethod
    def metric_names(cls) -> list[str]:
        return [m.name if isinstance(m, Metric) else m for m in cls.metrics]

    @classmethod
    def pinned(cls, cfg) -> dict:
        """Settings of this task that a resumed run must share with the first one."""
        return {}

    # -- command line -------------------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser) -> None:
        """Add this task's own options to ``tokbench eval`` (an ``argparse`` parser)."""

    @classmethod
    def options_from_args(cls, args) -> dict:
        """This task's options from the parsed ``tokbench eval`` arguments (``EvalConfig.task_options``)."""
        return {}

    # -- per-image tasks ----------------------------------------------------------------
    def decodings(self, tokenizer, tokens) -> dict[str, torch.Tensor]:
        """More decodings of a batch's tokens than the plain one, ``name -> (B, 3, H, W)``, for
        tasks that score them (the prefix task: decodings from the first k tokens). The runner
        rounds them to 8 bits and crops them like the reconstruction into ``Pair.decodings``."""
        return {}

    def score(self, pairs: list[Pair], ctx: MetricContext) -> list[dict]:
        """One row per pair: ``{metric: value, ...}`` (keys starting with ``_`` hold arrays)."""
        raise NotImplementedError(f"task {self.name} scores per image but has no score()")

    def aggregate(self, rows: list[dict], ctx: MetricContext) -> TaskSummary:
        """Per-image metrics as means with intervals; subclasses add dataset-level ones."""
        summary = TaskSummary()
        for name in self.metric_names():
            if get_metric(name).aggregation != "per_image":
                continue
            values = [r[name] for r in rows if r.get(name) is not None and np.isfinite(r[name])]
            if values:
                summary.metrics[name] = metric_entry(name, values)
        return summary

    # -- dataset-level tasks ------------------------------------------------------------
    def check_applicable(self, tokenizer, cfg) -> None:
        """Raise ``ValueError`` (before any work) when this task cannot score ``tokenizer``."""

    def run_dataset(self, cfg, tokenizer, dataset: Dataset, ctx: MetricContext) -> tuple[dict, dict[str, str]]:
        """The task's results block and its grids (``name -> path relative to --out``)."""
        raise NotImplementedError(f"task {self.name} is scored over the dataset but has no run_dataset()")

    # -- report -------------------------------------------------------------------------
    grid_caption = "original | reconstruction | difference x4"

    @classmethod
    def plots(cls, runs: list[dict], plot_dir: Path, new_figure: Callable) -> dict[str, str]:
        """Report plots over one or more runs: ``title -> file name`` written into ``plot_dir``.

        ``new_figure(figsize=(w, h))`` returns a matplotlib ``(fig, ax)`` on the non-interactive
        backend (figsize in inches, optional).
        """
        return {}


def image_quality_rows(pairs: list[Pair], ctx: MetricContext) -> list[dict]:
    """PSNR, SSIM and (when its network is loaded) LPIPS for each pair."""
    lpips = ctx.networks.get("lpips")
    rows = []
    for pair in pairs:
        x, y = pair.original[None], pair.reconstruction[None]
        row = {"psnr": float(psnr_8bit(x, y)[0]), "ssim": float(ssim_8bit(x, y)[0])}
        if lpips is not None:
            row["lpips"] = float(lpips(x.to(ctx.device), y.to(ctx.device))[0])
        rows.append(row)
    return rows


IMAGE_QUALITY = ("psnr", "ssim", "lpips")
