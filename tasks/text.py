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

from tokbench.imageio import tensor_to_uint8
from tokbench.metrics.stats import mean_ci95
from tokbench.results import METRIC_RANGES
from tokbench.metrics.text import (PAGE_CONFIG, PAGE_SCALE, WORD_CONFIG, cer, ocr_page, ocr_words, size_bucket, wer,
                                   word_scores)
from tokbench.tasks.base import IMAGE_QUALITY_DIRECTIONS, MetricContext, Pair, Task, image_quality_rows

BUCKETS = ("small", "medium", "large", "all")
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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, path)
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


def _scaled_boxes(pair: Pair) -> list[list[int]]:
    top, left = pair.offset
    return [[round(v * pair.scale) + (left if i % 2 == 0 else top) for i, v in enumerate(w["box"])]
            for w in pair.item.meta.get("words", [])]


def _word_rows(prefix: str, words: list[dict], readings: list[str], image_height: int, row: dict) -> None:
    per_bucket: dict[str, list[tuple[float, float]]] = {b: [] for b in BUCKETS}
    for word, reading in zip(words, readings):
        acc, ned = word_scores(word["text"], reading)
        per_bucket[size_bucket(word["size_px"], image_height)].append((acc, ned))
        per_bucket["all"].append((acc, ned))
    for bucket, scores in per_bucket.items():
        if scores:
            row[f"{prefix}acc_{bucket}"] = sum(a for a, _ in scores) / len(scores)
            row[f"{prefix}ned_{bucket}"] = sum(n for _, n in scores) / len(scores)


class TextTask(Task):
    name, default_suite, primary = "text", "text", "cer_gt"
    directions = {**IMAGE_QUALITY_DIRECTIONS, "cer_gt": False, "wer_gt": False, "cer_ocr": False, "wer_ocr": False,
                  **{f"word_{m}_{b}": True for m in ("acc", "ned") for b in BUCKETS}}

    def score(self, pairs: list[Pair], ctx: MetricContext) -> list[dict]:
        rows = image_quality_rows(pairs, ctx)
        jobs = []
        for pair in pairs:
            boxes = _scaled_boxes(pair)
            jobs.append((tensor_to_uint8(pair.original), boxes))
            jobs.append((tensor_to_uint8(pair.reconstruction), boxes))
        pool = ocr_pool(ctx)
        t0 = time.perf_counter()
        readings = list(pool.map(_ocr_job, jobs) if pool is not None else map(_ocr_job, jobs))
        ctx.timers["ocr_s"] = ctx.timers.get("ocr_s", 0.0) + time.perf_counter() - t0
        for i, (row, pair) in enumerate(zip(rows, pairs)):
            orig, rec = readings[2 * i], readings[2 * i + 1]
            row["ocr_original"], row["ocr_reconstruction"] = orig["page"], rec["page"]
            row["cer_ocr"], row["wer_ocr"] = cer(orig["page"], rec["page"]), wer(orig["page"], rec["page"])
            truth = pair.item.meta.get("text")
            if truth is not None:
                row["cer_gt"], row["wer_gt"] = cer(truth, rec["page"]), wer(truth, rec["page"])
                row["identity_cer_gt"], row["identity_wer_gt"] = cer(truth, orig["page"]), wer(truth, orig["page"])
            words = pair.item.meta.get("words", [])
            if words:
                height = pair.original.shape[-2]
                scaled = [{**w, "size_px": w["size_px"] * pair.scale} for w in words]
                _word_rows("word_", scaled, rec["words"], height, row)
                _word_rows("identity_word_", scaled, orig["words"], height, row)
            row["size_px"] = pair.item.meta.get("size_px")
        return rows

    def aggregate(self, rows: list[dict], ctx: MetricContext):
        metrics, extra, skipped = super().aggregate(rows, ctx)
        identity = {}
        for key in ["cer_gt", "wer_gt", *[f"word_{m}_{b}" for m in ("acc", "ned") for b in BUCKETS]]:
            values = [r[f"identity_{key}"] for r in rows if r.get(f"identity_{key}") is not None]
            if values:
                identity[key] = mean_ci95(values, METRIC_RANGES[key][:2])
        extra["identity_upper_bound"] = identity
        by_size: dict[str, list[float]] = {}
        for r in rows:
            if r.get("size_px") is not None and r.get("cer_gt") is not None:
                by_size.setdefault(str(r["size_px"]), []).append(r["cer_gt"])
        extra["cer_gt_by_font_size"] = {k: mean_ci95(v, METRIC_RANGES["cer_gt"][:2]) for k, v in sorted(by_size.items(), key=lambda kv: float(kv[0]))}
        if not any(r.get("cer_gt") is not None for r in rows):
            skipped["cer_gt"] = "no ground-truth text (add a manifest with file,text columns)"
        return metrics, extra, skipped
