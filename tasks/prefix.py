"""Prefix curves: how image quality grows with the number of tokens decoded, coarse to fine.

Tokenizers whose tokens have a coarse-to-fine order (`Tokenizer.prefix_lengths` is not None)
can decode from the first k tokens: the 1D family after nested (tail) dropout, at
k = 1, 2, 4, ..., K (TiTok's ordered tokens, FlexTok, DetailFlow judge a tokenizer this way),
and the residual-scale family at the end of each scale (VAR's coarse-to-fine maps). For every
image the task scores PSNR, SSIM and (with its weights) LPIPS at each k, and reports

* the curve: each metric's mean and 95% interval at each k (``extra["prefix_curve"]``);
* the headline: the area under each metric's curve against log2 k, divided by the width of
  that range (trapezoid rule), i.e. the metric's average over the log-spaced prefixes, in
  the metric's own unit. An ordered tokenizer that is good with few tokens scores higher
  than one that needs all of them for the same final PSNR.

The areas of tokenizers with different token counts span different ranges of log2 k; compare
them at equal K, or read the curves. Public TiTok checkpoints have no null token for dropped
tail tokens (they were not trained with nested dropout), so they are refused rather than
scored with an invented stand-in.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tokbench.metrics.declaration import Metric
from tokbench.metrics.image import psnr_8bit, ssim_8bit
from tokbench.metrics.stats import mean_ci95
from tokbench.tasks.base import IMAGE_QUALITY, MetricContext, Pair, Task, TaskSummary, image_quality_rows
from tokbench.tasks.data import parse_resolution

CURVE_METRICS = ("psnr", "ssim", "lpips")
_AUC_DEFINITION = ("area under the {title}-vs-log2(tokens) curve of decodings from the first 1, 2, 4, ... tokens "
                   "(or whole scales), divided by the width of the log2 range: the {title} averaged over log-spaced "
                   "prefixes")
PREFIX_METRICS = (
    Metric("prefix_auc_psnr", "prefix PSNR area", _AUC_DEFINITION.format(title="PSNR"), True, unit="dB",
           low=0.0, high=100.0),
    Metric("prefix_auc_ssim", "prefix SSIM area", _AUC_DEFINITION.format(title="SSIM"), True, low=-1.0, high=1.0),
    Metric("prefix_auc_lpips", "prefix LPIPS area", _AUC_DEFINITION.format(title="LPIPS"), False, low=0.0, high=2.0),
)


def log2_area(tokens: np.ndarray, values: np.ndarray) -> float:
    """Trapezoid area of ``values`` over log2(``tokens``) divided by the range's width (the
    value itself when there is one point)."""
    x = np.log2(np.asarray(tokens, dtype=np.float64))
    y = np.asarray(values, dtype=np.float64)
    if len(x) == 1:
        return float(y[0])
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def _name(k: int) -> str:
    return f"prefix_{k}"


class PrefixTask(Task):
    name, default_suite, primary = "prefix", "photos", "prefix_auc_psnr"
    headline = ("prefix_auc_psnr", "prefix_auc_lpips", "psnr")
    metrics = (*IMAGE_QUALITY, *PREFIX_METRICS)
    grid_caption = "original | reconstruction from all tokens | difference x4"

    def check_applicable(self, tokenizer, cfg) -> None:
        _, size = parse_resolution(cfg.resolution)
        side = max(size or 256, tokenizer.stride)
        side -= side % tokenizer.stride
        if tokenizer.prefix_lengths(tokenizer.layout_for(side, side)) is None:
            raise ValueError(f"--tasks prefix: {tokenizer.family} tokenizers have no coarse-to-fine token order "
                             "(prefix curves are defined for holistic_1d and residual_scale, or a tokenizer whose "
                             "prefix_lengths() is not None)")

    def decodings(self, tokenizer, tokens) -> dict[str, torch.Tensor]:
        lengths = tokenizer.prefix_lengths(tokens.layout)
        # The last prefix is all tokens: the plain reconstruction, not decoded twice. The runner
        # calls score() on the same batch next, which reads the lengths from here.
        self._batch_lengths = lengths
        return {_name(k): tokenizer.decode_prefix(tokens, k) for k in lengths[:-1]}

    def score(self, pairs: list[Pair], ctx: MetricContext) -> list[dict]:
        rows = image_quality_rows(pairs, ctx)
        lpips = ctx.networks.get("lpips")
        for row, pair in zip(rows, pairs):
            lengths = self._batch_lengths
            x = pair.original[None]
            images = torch.stack([pair.decodings[_name(k)] for k in lengths[:-1]] + [pair.reconstruction])
            tokens = np.array(lengths, dtype=np.float32)
            curves = {"psnr": psnr_8bit(x.expand_as(images), images).numpy(),
                      "ssim": ssim_8bit(x.expand_as(images), images).numpy()}
            if lpips is not None:
                curves["lpips"] = lpips(x.expand_as(images).to(ctx.device), images.to(ctx.device)).reshape(-1).cpu().numpy()
            row["_prefix_tokens"] = tokens
            for metric, values in curves.items():
                row[f"_prefix_{metric}"] = np.asarray(values, dtype=np.float32)
                row[f"prefix_auc_{metric}"] = log2_area(tokens, values)
        return rows

    def aggregate(self, rows: list[dict], ctx: MetricContext) -> TaskSummary:
        summary = super().aggregate(rows, ctx)
        if ctx.networks.get("lpips") is None:
            summary.skipped_metrics["prefix_auc_lpips"] = ("needs LPIPS: " + ctx.skipped.get("lpips", "its weights "
                                                           "are not loaded"))
        by_k: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for row in rows:
            if "_prefix_tokens" not in row:
                continue
            for i, k in enumerate(np.asarray(row["_prefix_tokens"]).astype(int)):
                for metric in CURVE_METRICS:
                    if f"_prefix_{metric}" in row:
                        by_k[int(k)][metric].append(float(np.asarray(row[f"_prefix_{metric}"])[i]))
        bounds = {"psnr": (0.0, 100.0), "ssim": (-1.0, 1.0), "lpips": (0.0, 2.0)}
        summary.extra["prefix_curve"] = [
            {"tokens": k, **{metric: mean_ci95(values, bounds[metric]) for metric, values in sorted(points.items())}}
            for k, points in sorted(by_k.items())]
        summary.extra["prefix_note"] = ("curve points pool the images that share a prefix length; the areas "
                                        "(prefix_auc_*) are per image, then averaged")
        return summary

    @classmethod
    def plots(cls, runs: list[dict], plot_dir: Path, new_figure: Callable) -> dict[str, str]:
        """PSNR against the number of tokens decoded (log2 axis), one curve with its interval per run."""
        curves = [(r["tokenizer"]["name"], r["tasks"][cls.name]["extra"].get("prefix_curve"))
                  for r in runs if cls.name in r["tasks"]]
        curves = [(name, c) for name, c in curves if c]
        if not curves:
            return {}
        fig, ax = new_figure()
        for name, curve in curves:
            k = [p["tokens"] for p in curve]
            mean = [p["psnr"]["mean"] for p in curve]
            ax.plot(k, mean, "o-", label=name)
            ax.fill_between(k, [p["psnr"]["ci95"][0] for p in curve], [p["psnr"]["ci95"][1] for p in curve], alpha=0.2)
        ax.set_xscale("log", base=2), ax.set_xlabel("tokens decoded (prefix length)"), ax.set_ylabel("PSNR (dB)")
        ax.set_title("coarse-to-fine: quality by prefix length"), ax.legend(fontsize=7)
        fig.tight_layout(), fig.savefig(plot_dir / "prefix_curve.png", dpi=110)
        return {"Prefix curve (PSNR vs tokens decoded, 95% interval)": "prefix_curve.png"}

