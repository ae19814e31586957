"""Text: OCR of original and reconstruction, page-level CER/WER and word-level recognition.

Page level: CER and WER of the reconstruction's OCR against the ground truth (``*_gt``) and
against the OCR of the original (``*_ocr``; the only reference for real photos). Word level
(rendered images, whose word boxes are known): each ground-truth box is read from the
reconstruction (recognition only) and scored by exact match and edit similarity, bucketed
by text height. The same scores on the *original* are the identity upper bound, reported
beside them so that OCR's own error is visible.

OCR runs in a pool of worker processes (``--workers``), two jobs per image (original and
reconstruction), so that Tesseract keeps every core busy. Each worker limits Tesseract's
own OpenMP threads to one: several multi-threaded Tesseracts on a few cores spin against
each other and run several times slower than single-threaded ones side by side.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Callable

from tokbench.atomic import atomic_write_text
from tokbench.imageio import tensor_to_uint8
from tokbench.metrics.catalog import TEXT_SIZE_BUCKETS
from tokbench.metrics.text import (PAGE_CONFIG, PAGE_SCALE, WORD_CONFIG, cer, ocr_page, ocr_words, require_tesseract,
                                   size_bucket, wer, word_scores)
from tokbench.tasks.base import IMAGE_QUALITY, MetricContext, Pair, Task, TaskSummary, image_quality_rows, metric_entry

OCR_VERSION = "2"  # bump when OCR settings change: invalidates the cache of original-image OCR


def _ocr_cache_dir() -> Path:
    root = os.environ.get("TOKBENCH_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "tokbench")
    return Path(root) / "ocr"


def cached_ocr(image_HW3, boxes: list) -> dict:
    """Page text and word readings of an image; the originals' are cached on disk across runs."""
    key = hashlib.sha256(image_HW3.tobytes() + json.dumps([list(image_HW3.shape), boxes, PAGE_CONFIG, PAGE_SCALE, WORD_CONFIG,
                                                            OCR_VERSION]).encode()).hexdigest()
    path = _ocr_cache_dir() / f"{key}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            pass
    result = {"page": ocr_page(image_HW3), "words": ocr_words(image_HW3, boxes)}
    try:
        atomic_write_text(path, json.dumps(result))
    except OSError:
        pass  # a read-only cache only costs time
    return result


def _init_ocr_worker() -> None:
    os.environ["OMP_THREAD_LIMIT"] = "1"  # inherited by the tesseract processes this worker starts


def ocr_pool(ctx: MetricContext) -> Executor | None:
    """The run's OCR process pool (created on first use), or None to OCR in this process."""
    if ctx.workers < 1:
        return None
    if "ocr" not in ctx.pools:
        # fork on Linux (as torch's DataLoader does): workers start at once instead of importing
        # torch again; they only run PIL, numpy and Tesseract processes, no OpenMP of their own.
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        ctx.pools["ocr"] = ProcessPoolExecutor(ctx.workers, mp_context=multiprocessing.get_context(method),
                                               initializer=_init_ocr_worker)
    return ctx.pools["ocr"]


def _ocr_job(job: tuple) -> dict:
    return cached_ocr(*job)


def _scaled_boxes(pair: Pair) -> tuple[list[dict], list[list[int]]]:
    """The ground-truth words whose box lies inside the evaluated image, and those boxes in its pixels.

    Boxes are given on the original image; the resolution policy scales them and moves them
    by ``pair.offset`` (a center crop cuts the original's left/top off). Words cut by the
    crop cannot be read and are left out (counted in the row as ``words_cropped_out``).
    """
    top, left = pair.offset
    H, W = pair.original.shape[-2:]
    kept, boxes = [], []
    for word in pair.item.meta.get("words", []):
        x0, y0, x1, y1 = [round(v * pair.scale) + (left if i % 2 == 0 else top) for i, v in enumerate(word["box"])]
        if x0 >= 0 and y0 >= 0 and x1 <= W and y1 <= H:
            kept.append(word)
            boxes.append([x0, y0, x1, y1])
    return kept, boxes


def _word_rows(prefix: str, words: list[dict], readings: list[str], image_height: int, row: dict) -> None:
    per_bucket: dict[str, list[tuple[float, float]]] = {b: [] for b in TEXT_SIZE_BUCKETS}
    for word, reading in zip(words, readings):
        acc, ned = word_scores(word["text"], reading)
        per_bucket[size_bucket(word["size_px"], image_height)].append((acc, ned))
        per_bucket["all"].append((acc, ned))
    for bucket, scores in per_bucket.items():
        if scores:
            row[f"{prefix}acc_{bucket}"] = sum(a for a, _ in scores) / len(scores)
            row[f"{prefix}ned_{bucket}"] = sum(n for _, n in scores) / len(scores)


IDENTITY_METRICS = ("cer_gt", "wer_gt", *[f"word_{m}_{b}" for m in ("acc", "ned") for b in TEXT_SIZE_BUCKETS])


class TextTask(Task):
    name, default_suite, primary = "text", "text", "cer_gt"
    metrics = (*IMAGE_QUALITY, "cer_gt", "wer_gt", "cer_ocr", "wer_ocr",
               *[f"word_{m}_{b}" for m in ("acc", "ned") for b in TEXT_SIZE_BUCKETS])

    def check_applicable(self, tokenizer, cfg) -> None:
        require_tesseract()  # OCR needs the tesseract program: say so before any work

    def score(self, pairs: list[Pair], ctx: MetricContext) -> list[dict]:
        rows = image_quality_rows(pairs, ctx)
        jobs, words_per_pair = [], []
        for pair in pairs:
            words, boxes = _scaled_boxes(pair)
            words_per_pair.append(words)
            jobs.append((tensor_to_uint8(pair.original), boxes))
            jobs.append((tensor_to_uint8(pair.reconstruction), boxes))
        pool = ocr_pool(ctx)
        t0 = time.perf_counter()
        readings = list(pool.map(_ocr_job, jobs) if pool is not None else map(_ocr_job, jobs))
        ctx.timers["ocr_s"] = ctx.timers.get("ocr_s", 0.0) + time.perf_counter() - t0
        for i, (row, pair, words) in enumerate(zip(rows, pairs, words_per_pair)):
            orig, rec = readings[2 * i], readings[2 * i + 1]
            row["ocr_original"], row["ocr_reconstruction"] = orig["page"], rec["page"]
            row["cer_ocr"], row["wer_ocr"] = cer(orig["page"], rec["page"]), wer(orig["page"], rec["page"])
            truth = pair.item.meta.get("text")
            if truth is not None:
                row["cer_gt"], row["wer_gt"] = cer(truth, rec["page"]), wer(truth, rec["page"])
                row["identity_cer_gt"], row["identity_wer_gt"] = cer(truth, orig["page"]), wer(truth, orig["page"])
            if words:
                height = pair.original.shape[-2]
                scaled = [{**w, "size_px": w["size_px"] * pair.scale} for w in words]
                _word_rows("word_", scaled, rec["words"], height, row)
                _word_rows("identity_word_", scaled, orig["words"], height, row)
            row["words_cropped_out"] = len(pair.item.meta.get("words", [])) - len(words)
            row["size_px"] = pair.item.meta.get("size_px")
        return rows

    def aggregate(self, rows: list[dict], ctx: MetricContext) -> TaskSummary:
        summary = super().aggregate(rows, ctx)
        identity = {}
        for key in IDENTITY_METRICS:
            values = [r[f"identity_{key}"] for r in rows if r.get(f"identity_{key}") is not None]
            if values:
                identity[key] = metric_entry(key, values)
        summary.extra["identity_upper_bound"] = identity
        # OCR of the original read nothing: no reference to score the reconstruction's OCR against.
        summary.extra["images_without_ocr_reference"] = sum(1 for r in rows if r.get("cer_ocr") is None)
        by_size: dict[str, list[float]] = {}
        for r in rows:
            if r.get("size_px") is not None and r.get("cer_gt") is not None:
                by_size.setdefault(str(r["size_px"]), []).append(r["cer_gt"])
        summary.extra["cer_gt_by_font_size"] = {k: metric_entry("cer_gt", v)
                                                for k, v in sorted(by_size.items(), key=lambda kv: float(kv[0]))}
        if not any(r.get("cer_gt") is not None for r in rows):
            summary.skipped_metrics["cer_gt"] = "no ground-truth text (add a manifest with file,text columns)"
        return summary

    @classmethod
    def plots(cls, runs: list[dict], plot_dir: Path, new_figure: Callable) -> dict[str, str]:
        """CER against ground truth by font size, one curve per run."""
        curves = [(r["tokenizer"]["name"], r["tasks"][cls.name]["extra"].get("cer_gt_by_font_size"))
                  for r in runs if cls.name in r["tasks"]]
        curves = [(name, by_size) for name, by_size in curves if by_size]
        if not curves:
            return {}
        fig, ax = new_figure()
        for name, by_size in curves:
            ax.plot([float(k) for k in by_size], [v["mean"] for v in by_size.values()], marker="o", label=name)
        ax.set_xlabel("font size (px)"), ax.set_ylabel("CER vs ground truth"), ax.set_title("CER by font size")
        ax.legend(fontsize=7)
        fig.tight_layout(), fig.savefig(plot_dir / "cer_by_font_size.png", dpi=110)
        return {"CER by font size (text)": "cer_by_font_size.png"}
