"""`run_eval`: run the requested tasks over their datasets and write the outputs.

The runner knows no task by name: tasks come from `tokbench.task_registry` and say whether
they score per image (`tokbench.tasks.pipeline.score_task`, resumable through the row cache)
or over the whole dataset (`Task.run_dataset`, after the per-image tasks, on rank 0).

Resuming: the run's settings are pinned in ``OUT/cache/run.json`` and every scored image is
cached as it comes (`tokbench.tasks.cache`); rerunning the same command with the same
``--out`` skips what is done, and the final files equal those of an uninterrupted run.
Under ``torchrun`` each rank scores ``items[rank::world]``; rank 0 gathers every rank's rows
in dataset order, so results do not depend on the number of ranks.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

import tokbench
from tokbench.metrics.networks import canonical_skips, load_networks, missing_weights
from tokbench.protocol import PREPROCESSINGS
from tokbench.protocol_registry import get_protocol
from tokbench.task_registry import get_task
from tokbench.tasks.base import MetricContext, Task
from tokbench.tasks.cache import RowCache, pin_settings
from tokbench.tasks.data import Dataset, load_folder, parse_resolution, subset
from tokbench.tasks.outputs import assemble_results, write_outputs
from tokbench.tasks.pipeline import Interrupted, score_task
from tokbench.tasks.suites import load_suite

__all__ = ["EvalConfig", "Interrupted", "run_eval"]


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
    task_options: dict[str, dict] = field(default_factory=dict)  # task name -> its own options (Task.add_arguments)
    protocol: str | None = None  # a protocol preset (tokbench.protocol_registry) this run must follow
    preprocessing: str = "default"  # resampling: tokbench's, or a reference pipeline's (adm, var)
    workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    stop_after: int | None = None  # test hook: raise Interrupted after this many new images
    # False (the default): metrics whose pretrained weights are missing are skipped, each named with
    # the reason and remedy; True: refuse to run without them (`--strict-metrics`).
    strict_metrics: bool = False
    missing_weights: dict[str, str] = field(default_factory=dict)  # set by validate_config: skipped metric -> why

    def task_classes(self) -> list[type[Task]]:
        return [get_task(name) for name in self.tasks]

    def pinned(self) -> dict:
        """The settings a resumed run must share with the first one.

        Batch size, device and workers may differ: per-image scores do not depend on them
        beyond float rounding (see `tokbench.tasks.pipeline`).
        """
        settings = {"tokenizer": self.tokenizer, "tasks": self.tasks, "data": str(self.data) if self.data else None,
                    "suite": self.suite, "resolution": self.resolution, "skip_metrics": sorted(self.skip_metrics),
                    "limit": self.limit, "fid_min_images": self.fid_min_images}
        if self.protocol is not None or self.preprocessing != "default":  # absent otherwise: older runs resume
            settings.update(protocol=self.protocol, preprocessing=self.preprocessing)
        for task in self.task_classes():
            settings.update(task.pinned(self))
        return settings


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def validate_config(cfg: EvalConfig) -> None:
    if not cfg.tasks:
        raise ValueError("--tasks is empty; name at least one task")
    cfg.task_classes()  # an unknown task name fails here, listing the available ones
    cfg.skip_metrics = canonical_skips(cfg.skip_metrics)
    resolve_missing_weights(cfg)
    parse_resolution(cfg.resolution)
    for name, value, minimum in (("--batch-size", cfg.batch_size, 1), ("--limit", cfg.limit, 1),
                                 ("--workers", cfg.workers, 0)):
        if value is not None and value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if cfg.data is not None and cfg.suite is not None:
        raise ValueError("give either --data or --suite, not both")
    if cfg.preprocessing not in PREPROCESSINGS:
        raise ValueError(f"preprocessing must be one of {', '.join(PREPROCESSINGS)}, got {cfg.preprocessing!r}")
    check_device(cfg.device)
    if cfg.protocol is not None:
        get_protocol(cfg.protocol).check(cfg)  # the preset's settings, metrics and weights, before any work


def resolve_missing_weights(cfg: EvalConfig) -> None:
    """Skip the requested tasks' metrics whose weights are missing (or refuse, with ``strict_metrics``).

    The skipped metrics join ``cfg.skip_metrics`` (so every task and the resume pin see them) and
    ``cfg.missing_weights`` keeps why, for the start-up message, results.json and the report.
    """
    if cfg.strict_metrics or cfg.protocol is not None:
        # the networks' loader (or the preset's check: a preset needs its metrics) refuses, naming every
        # missing file, after the cheaper checks
        return
    wanted = [m for task in cfg.task_classes() for m in task.metric_names() if m not in cfg.skip_metrics]
    missing = missing_weights(wanted, cfg.weights_dir)
    cfg.missing_weights = {**cfg.missing_weights, **missing}
    cfg.skip_metrics = sorted(set(cfg.skip_metrics) | set(missing))


def announce_skipped_metrics(cfg: EvalConfig) -> None:
    """One stderr line per metric skipped for missing weights, before any work."""
    for metric, reason in cfg.missing_weights.items():
        print(f"tokbench: skipping {metric}: {reason} (--strict-metrics refuses instead)", file=sys.stderr)


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
    """The networks of every weighted metric the per-image tasks report, unless skipped;
    fails before any work, naming every missing weights file."""
    per_image = [t for t in cfg.task_classes() if t.scoring == "per_image"]
    networks = load_networks([m for t in per_image for m in t.metric_names()], cfg.skip_metrics, cfg.weights_dir,
                             cfg.device)
    unreported = get_protocol(cfg.protocol).unreported_weighted() if cfg.protocol else []
    skipped = {m: cfg.missing_weights.get(m) or (f"not part of protocol {cfg.protocol}" if m in unreported
                                                 else "skipped with --skip-metric")
               for m in cfg.skip_metrics}
    return MetricContext(networks=networks, skipped=skipped,
                         device=cfg.device, fid_min_images=cfg.fid_min_images, workers=cfg.workers,
                         resolution=cfg.resolution, task_options=cfg.task_options, weights_dir=cfg.weights_dir)


def load_dataset(cfg: EvalConfig, task: type[Task]) -> Dataset:
    if cfg.data is not None:
        return load_folder(cfg.data)
    return load_suite(cfg.suite or task.default_suite)


def gather_rows(cfg: EvalConfig, tasks: list[Task], datasets: dict[str, Dataset]) -> dict[str, dict[str, dict]] | None:
    """Every rank's cached rows of the per-image tasks, merged on rank 0 (None elsewhere).

    Rows travel through the process group (``gather_object``), not the file system, so ranks
    on different machines need no shared ``--out`` folder.
    """
    rank, world = rank_and_world()
    mine = {}
    for task in tasks:
        cache = RowCache(cfg.out / "cache", task.name, rank)
        cached, arrays = cache.load_all(), cache.load_arrays()
        ids = [it.id for it in subset(datasets[task.name].items, cfg.limit)[rank::world]]
        mine[task.name] = {i: {**cached[i], **arrays.get(i, {})} for i in ids if i in cached}
    if world == 1:
        return mine
    gathered = [None] * world if rank == 0 else None
    dist.gather_object(mine, gathered, dst=0)
    if rank != 0:
        return None
    return {t.name: {k: v for part in gathered for k, v in part[t.name].items()} for t in tasks}


def protocol_block(cfg: EvalConfig, results: dict) -> dict | None:
    """The results' ``protocol`` entry: the preset as applied and its deviations, or None."""
    if cfg.protocol is None:
        return None
    counts = {name: block["num_images"] for name, block in results["tasks"].items()}
    limited = [] if cfg.limit is None else [f"--limit {cfg.limit}: a subset of the data"]
    return get_protocol(cfg.protocol).record(cfg.resolution, counts, limited)


def run_eval(cfg: EvalConfig, ctx: MetricContext | None = None) -> dict | None:
    """Run the benchmark; returns the results dict on rank 0 (None on other ranks).

    Order matters: settings and device, the tokenizer (and whether each task applies to it),
    metric weights, Tesseract and the data are all checked before the first image is scored,
    so a typo or a missing file stops the run before any work (cheapest mistakes first).
    """
    validate_config(cfg)
    rank, world = rank_and_world()
    start = time.perf_counter()
    tasks = [cls() for cls in cfg.task_classes()]
    tokenizer = tokbench.load(cfg.tokenizer).to(cfg.device).eval()
    for task in tasks:
        task.check_applicable(tokenizer, cfg)  # may skip a metric whose weights are missing, too
    if rank == 0:
        announce_skipped_metrics(cfg)
    per_image = [t for t in tasks if t.scoring == "per_image"]
    own_ctx = ctx is None
    if own_ctx:
        ctx = build_metric_context(cfg)
    try:
        datasets = {t.name: load_dataset(cfg, type(t)) for t in tasks}  # an empty or missing folder fails here
        cfg.out.mkdir(parents=True, exist_ok=True)
        pin_settings(cfg.out / "cache", cfg.pinned(), cfg.out, rank)
        if world > 1:
            dist.barrier()
        timers = {"tokenizer_s": 0.0, "metrics_s": 0.0, "ocr_s": 0.0, "io_s": 0.0}
        task_seconds, new_counter = {}, [0]
        for task in per_image:
            t0 = time.perf_counter()
            score_task(cfg, task, tokenizer, ctx, datasets[task.name], rank, world, timers, new_counter)
            task_seconds[task.name] = time.perf_counter() - t0
        rows = gather_rows(cfg, per_image, datasets)
        if rank != 0:
            return None
        blocks, grids = {}, {}
        for task in tasks:
            if task.scoring == "dataset":
                t0 = time.perf_counter()
                blocks[task.name], task_grids = task.run_dataset(cfg, tokenizer, datasets[task.name], ctx)
                grids.update(task_grids)
                task_seconds[task.name] = time.perf_counter() - t0
        results, rows_by_task = assemble_results(cfg, tokenizer, ctx, tasks, datasets, rows, blocks)
        results["protocol"] = protocol_block(cfg, results)
        results["timings"] = {"total_s": time.perf_counter() - start, "tasks_s": task_seconds, "breakdown_s": timers}
        write_outputs(cfg, results, rows_by_task, datasets, tasks, grids)
        return results
    finally:
        if own_ctx:
            ctx.close()
