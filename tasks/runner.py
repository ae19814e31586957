"""`run_eval`: run tasks over datasets, cache per-image rows as they come, aggregate, write outputs.

Resuming: every scored image is appended (and fsynced) to ``OUT/cache/<task>.r<rank>.jsonl``
before the next batch starts; a rerun with the same ``--out`` skips the images already there,
so an interrupted run finishes with the same files as an uninterrupted one. The settings of
the run are pinned in ``OUT/cache/run.json``: resuming with other settings is refused.
Under ``torchrun`` each rank scores ``items[rank::world]``; rank 0 aggregates every rank's
rows, sorted in dataset order, so results do not depend on the number of ranks.

Pipeline: data-loader worker processes decode and resize images (``--workers``), the
tokenizer runs batched on ``--device`` in the main process, and the text task's OCR runs in
a pool of worker processes (see ``tokbench.tasks.text``). Files that cannot be decoded are
cached as skipped rows with their reason, so a resumed run lists them too.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

import tokbench
from tokbench.imageio import quantize_8bit, save_png
from tokbench.tasks import generation
from tokbench.tasks.base import MetricContext, Pair
from tokbench.tasks.data import BadImageError, Dataset, Item, crop_content, load_folder, parse_resolution, prepare, subset
from tokbench.tasks.detail import DetailTask
from tokbench.tasks.reconstruction import ReconstructionTask
from tokbench.tasks.suites import load_suite
from tokbench.tasks.text import TextTask

TASKS = {"reconstruction": ReconstructionTask, "detail": DetailTask, "text": TextTask}  # scored image by image
GENERATION = generation.NAME  # scored over the dataset (an AR prior fitted on its tokens)
METRICS_NEEDING_WEIGHTS = ("lpips", "rfid")
METRIC_ALIASES = {"fid": "rfid"}  # --skip-metric lpips,fid reads naturally too
SKIP_KEY = "_skipped"  # a cached row for an unreadable file: {"id": ..., "_skipped": reason}


class Interrupted(RuntimeError):
    """Raised by the ``stop_after`` test hook to imitate a crash mid-run."""


@dataclass
class EvalConfig:
    tokenizer: str
    tasks: list[str]
    out: Path
    data: Path | None = None
    suite: str | None = None
    resolution: str = "256"
    batch_size: int = 8
    device: str = "cpu"
    skip_metrics: list[str] = field(default_factory=list)
    weights_dir: str | None = None
    limit: int | None = None  # score this many images per dataset, spread evenly (quick looks, tests)
    fid_min_images: int = 1000
    gen_steps: int = 300  # training steps of the generation task's AR prior
    workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    stop_after: int | None = None  # test hook: raise Interrupted after this many new images

    @property
    def per_image_tasks(self) -> list[str]:
        return [t for t in self.tasks if t in TASKS]

    def pinned(self) -> dict:
        """The settings a resumed run must share with the first one."""
        return {"tokenizer": self.tokenizer, "tasks": self.tasks, "data": str(self.data) if self.data else None,
                "suite": self.suite, "resolution": self.resolution, "skip_metrics": sorted(self.skip_metrics),
                "limit": self.limit, "fid_min_images": self.fid_min_images,
                **({"gen_steps": self.gen_steps} if GENERATION in self.tasks else {})}
        # batch size, device and workers may differ between the first run and a resume:
        # per-image scores do not depend on them.


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def validate_config(cfg: EvalConfig) -> None:
    unknown = [t for t in cfg.tasks if t not in TASKS and t != GENERATION]
    if unknown or not cfg.tasks:
        raise ValueError(f"unknown task(s) {unknown or cfg.tasks}; choose from {', '.join([*TASKS, GENERATION])}")
    if cfg.gen_steps < 1:
        raise ValueError(f"--gen-steps must be >= 1, got {cfg.gen_steps}")
    cfg.skip_metrics = sorted({METRIC_ALIASES.get(m, m) for m in cfg.skip_metrics})
    bad = [m for m in cfg.skip_metrics if m not in METRICS_NEEDING_WEIGHTS]
    if bad:
        raise ValueError(f"--skip-metric takes {', '.join(METRICS_NEEDING_WEIGHTS)}; got {', '.join(bad)}")
    parse_resolution(cfg.resolution)
    if cfg.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    if cfg.limit is not None and cfg.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {cfg.limit}")
    if cfg.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {cfg.workers}")
    if cfg.data is not None and cfg.suite is not None:
        raise ValueError("give either --data or --suite, not both")
    check_device(cfg.device)


def check_device(device: str) -> None:
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available here (use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")


def build_metric_context(cfg: EvalConfig) -> MetricContext:
    """Load the metric networks, failing before any work if their weights are missing."""
    from tokbench import weights

    ctx = MetricContext(device=cfg.device, fid_min_images=cfg.fid_min_images, workers=cfg.workers)
    needed = [m for m in METRICS_NEEDING_WEIGHTS if m not in cfg.skip_metrics and cfg.per_image_tasks]
    if "reconstruction" not in cfg.tasks and "rfid" in needed:
        needed.remove("rfid")
    paths = weights.require(needed, cfg.weights_dir)
    if "lpips" in paths:
        from tokbench.metrics.perceptual import LPIPSMetric

        ctx.lpips = LPIPSMetric(paths["lpips"]).to(cfg.device)
    if "rfid" in paths:
        from tokbench.metrics.fid import inception_feature_fn

        ctx.fid_features = inception_feature_fn(paths["rfid"], cfg.device)
    ctx.skipped = {m: "skipped with --skip-metric" for m in cfg.skip_metrics}
    return ctx


def load_dataset(cfg: EvalConfig, task_name: str) -> Dataset:
    if cfg.data is not None:
        return load_folder(cfg.data)
    default = generation.DEFAULT_SUITE if task_name == GENERATION else TASKS[task_name].default_suite
    return load_suite(cfg.suite or default)


def _safe_name(item_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in item_id)


class RowCache:
    """Append-only cache of scored images for one task and rank.

    Scalar results go to ``<task>.r<rank>.jsonl`` (one JSON row per image). Arrays that a
    task keeps per image (private keys holding ``np.ndarray``, e.g. Inception features for
    rFID) go to float32 ``.npz`` chunks in ``<task>.r<rank>.arrays/``, written atomically
    *before* their rows, so every cached row has its arrays (2048 floats as JSON text would
    make an ImageNet-sized cache gigabytes large).
    """

    def __init__(self, folder: Path, task: str, rank: int) -> None:
        self.folder, self.task = folder, task
        self.path = folder / f"{task}.r{rank}.jsonl"
        self.array_dir = folder / f"{task}.r{rank}.arrays"

    def load_all(self) -> dict[str, dict]:
        """Rows of every rank's file (a shared folder lets a resume change the rank count)."""
        rows = {}
        for path in sorted(self.folder.glob(f"{self.task}.r*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash: that image is scored again
                rows[row["id"]] = row
        return rows

    def load_arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """``id -> {key: array}`` from every rank's array chunks."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for path in sorted(self.folder.glob(f"{self.task}.r*.arrays/*.npz")):
            with np.load(path, allow_pickle=False) as chunk:
                ids = [str(i) for i in chunk["ids"]]
                for key in chunk.files:
                    if key != "ids":
                        for i, row_id in enumerate(ids):
                            out.setdefault(row_id, {})[key] = chunk[key][i]
        return out

    def append(self, rows: list[dict]) -> None:
        arrays = {k for r in rows for k, v in r.items() if isinstance(v, np.ndarray)}
        if arrays:
            self.array_dir.mkdir(parents=True, exist_ok=True)
            path = self.array_dir / f"{len(list(self.array_dir.glob('*.npz'))):07d}.npz"
            tmp = path.with_name(f"{path.stem}.tmp.npz")
            np.savez(tmp, ids=np.array([r["id"] for r in rows]),
                     **{k: np.stack([r[k] for r in rows]).astype(np.float32) for k in sorted(arrays)})
            os.replace(tmp, path)
            rows = [{k: v for k, v in r.items() if k not in arrays} for r in rows]
        with open(self.path, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def pin_settings(cache_dir: Path, cfg: EvalConfig, rank: int) -> None:
    pinned_path = cache_dir / "run.json"
    if pinned_path.is_file():
        previous = json.loads(pinned_path.read_text())
        if previous != cfg.pinned():
            changed = sorted(k for k in cfg.pinned() if previous.get(k) != cfg.pinned()[k])
            raise ValueError(f"{cfg.out} holds a run with other settings ({', '.join(changed)}); "
                             "use another --out or delete that folder")
    elif rank == 0:
        cache_dir.mkdir(parents=True, exist_ok=True)
        from tokbench.checkpoint import atomic_write_text

        atomic_write_text(pinned_path, json.dumps(cfg.pinned(), indent=2))


class _PreparedImages(torch.utils.data.Dataset):
    """Decode + resolution policy for each item; runs in data-loader worker processes."""

    def __init__(self, items: list[Item], resolution: str) -> None:
        self.items, self.resolution = items, resolution

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        try:
            return i, prepare(self.items[i].pixels(), self.resolution), None
        except BadImageError as err:
            return i, None, str(err)


def _as_is(sample):
    return sample


def _prepared_stream(items: list[Item], resolution: str, workers: int):
    """``(item, Prepared | None, reason | None)`` in item order, decoded by ``workers`` processes."""
    loader = torch.utils.data.DataLoader(_PreparedImages(items, resolution), batch_size=None, shuffle=False,
                                         num_workers=min(workers, len(items)), collate_fn=_as_is,
                                         prefetch_factor=4 if workers else None)
    for i, prepared, reason in loader:
        yield items[i], prepared, reason


def _batches(stream, batch_size: int):
    """Consecutive good images of one evaluation size, at most ``batch_size``; bad ones alone."""
    batch = []
    for item, prepared, reason in stream:
        if reason is not None:
            yield [(item, None, reason)]
            continue
        if batch and (len(batch) == batch_size or batch[0][1].x_3HW.shape != prepared.x_3HW.shape):
            yield batch
            batch = []
        batch.append((item, prepared, None))
    if batch:
        yield batch


def score_task(cfg: EvalConfig, task_name: str, tokenizer, ctx: MetricContext, dataset: Dataset,
               timers: dict, new_counter: list[int]) -> None:
    """Score this rank's share of ``dataset`` that is not in the cache yet."""
    rank, world = rank_and_world()
    task = TASKS[task_name]()
    cache = RowCache(cfg.out / "cache", task_name, rank)
    done = cache.load_all()
    items = subset(dataset.items, cfg.limit)[rank::world]
    todo = [it for it in items if it.id not in done]
    rec_dir = cfg.out / "reconstructions" / task_name
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=task_name, unit="img", disable=rank != 0)
    t_io = time.perf_counter()
    for batch in _batches(_prepared_stream(todo, cfg.resolution, cfg.workers), cfg.batch_size):
        t0 = time.perf_counter()
        timers["io_s"] += t0 - t_io  # waiting for decoded images
        if batch[0][2] is not None:  # an unreadable file: remembered with its reason
            item, _, reason = batch[0]
            if rank == 0:
                tqdm.write(f"skipped {item.id}: {reason}")
            cache.append([{"id": item.id, SKIP_KEY: reason}])
            bar.update(1)
            t_io = time.perf_counter()
            continue
        x = torch.stack([p.x_3HW for _, p, _ in batch]).to(cfg.device)
        with torch.no_grad():
            tokens = tokenizer.encode(x)
            rec = quantize_8bit(tokenizer.decode(tokens)).cpu()
        bits = tokens.bits_per_image()
        t1 = time.perf_counter()
        pairs = [Pair(it, crop_content(quantize_8bit(p.x_3HW), p), crop_content(rec[i], p), p.scale, p.content_box[:2])
                 for i, (it, p, _) in enumerate(batch)]
        ocr_before = ctx.timers.get("ocr_s", 0.0)
        rows = task.score(pairs, ctx)
        t2 = time.perf_counter()
        ocr = ctx.timers.get("ocr_s", 0.0) - ocr_before
        for i, (row, (it, _, _)) in enumerate(zip(rows, batch)):
            row.update({"id": it.id, "bits": None if bits is None else float(bits[i])})
            save_png(pairs[i].reconstruction, rec_dir / f"{_safe_name(it.id)}.png")
        cache.append(rows)
        timers["tokenizer_s"] += t1 - t0
        timers["metrics_s"] += t2 - t1 - ocr
        timers["ocr_s"] += ocr
        t_io = time.perf_counter()
        timers["io_s"] += t_io - t2
        bar.update(len(batch))
        new_counter[0] += len(batch)
        if cfg.stop_after is not None and new_counter[0] >= cfg.stop_after:
            raise Interrupted(f"stopped after {new_counter[0]} new images (test hook)")
    bar.close()


def gather_rows(cfg: EvalConfig, datasets: dict[str, Dataset]) -> dict[str, dict[str, dict]] | None:
    """Every rank's cached rows, merged on rank 0 (None elsewhere).

    Rows travel through the process group (``gather_object``), not the file system, so ranks
    on different machines need no shared ``--out`` folder.
    """
    rank, world = rank_and_world()
    mine = {}
    for name in cfg.tasks:
        cache = RowCache(cfg.out / "cache", name, rank)
        cached, arrays = cache.load_all(), cache.load_arrays()
        ids = [it.id for it in subset(datasets[name].items, cfg.limit)[rank::world]]
        mine[name] = {i: {**cached[i], **arrays.get(i, {})} for i in ids if i in cached}
    if world == 1:
        return mine
    gathered = [None] * world if rank == 0 else None
    dist.gather_object(mine, gathered, dst=0)
    if rank != 0:
        return None
    return {name: {k: v for part in gathered for k, v in part[name].items()} for name in cfg.tasks}


def run_eval(cfg: EvalConfig, ctx: MetricContext | None = None) -> dict | None:
    """Run the benchmark; returns the results dict on rank 0 (None on other ranks).

    Order matters: settings and device, the tokenizer, metric weights, Tesseract and the
    data are all checked before the first image is scored, so a typo or a missing file stops
    the run before any work (and the cheapest mistakes are reported first).
    """
    from tokbench.tasks.outputs import add_dataset_block, assemble_results, write_outputs

    validate_config(cfg)
    rank, world = rank_and_world()
    start = time.perf_counter()
    tokenizer = tokbench.load(cfg.tokenizer).to(cfg.device).eval()
    if GENERATION in cfg.tasks:
        generation.check_applicable(tokenizer, cfg)
    per_image = replace(cfg, tasks=cfg.per_image_tasks)  # the tasks scored image by image
    own_ctx = ctx is None
    if own_ctx:
        ctx = build_metric_context(cfg)
    try:
        if "text" in cfg.tasks:
            from tokbench.metrics.text import require_tesseract

            require_tesseract()
        datasets = {t: load_dataset(cfg, t) for t in cfg.tasks}  # an empty or missing folder fails here
        cfg.out.mkdir(parents=True, exist_ok=True)
        pin_settings(cfg.out / "cache", cfg, rank)
        if world > 1:
            dist.barrier()
        timers = {"tokenizer_s": 0.0, "metrics_s": 0.0, "ocr_s": 0.0, "io_s": 0.0}
        task_seconds, new_counter = {}, [0]
        for name in per_image.tasks:
            t0 = time.perf_counter()
            score_task(cfg, name, tokenizer, ctx, datasets[name], timers, new_counter)
            task_seconds[name] = time.perf_counter() - t0
        rows = gather_rows(per_image, datasets)
        if rank != 0:
            return None
        results, rows_by_task = assemble_results(per_image, tokenizer, ctx, datasets, TASKS, rows)
        extra_grids = {}
        if GENERATION in cfg.tasks:
            t0 = time.perf_counter()
            block, extra_grids[GENERATION] = generation.run_generation(cfg, tokenizer, datasets[GENERATION])
            results["tasks"][GENERATION] = block
            add_dataset_block(results, cfg, datasets[GENERATION], block["num_images"] + block["num_skipped"])
            task_seconds[GENERATION] = time.perf_counter() - t0
        results["tasks"] = {t: results["tasks"][t] for t in cfg.tasks}  # in the order asked for
        results["timings"] = {"total_s": time.perf_counter() - start, "tasks_s": task_seconds, "breakdown_s": timers}
        write_outputs(cfg, results, rows_by_task, datasets, TASKS, extra_grids)
        return results
    finally:
        if own_ctx:
            ctx.close()
