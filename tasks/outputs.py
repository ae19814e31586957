"""Assembling ``results.json`` and ``per_image.csv`` from the gathered per-image rows and the
dataset-level tasks' blocks, and writing every output file of a run."""
from __future__ import annotations

import datetime as dt

import pandas as pd

from tokbench.atomic import atomic_write_text
from tokbench.provenance import checkpoint_sha256, git_commit, hardware
from tokbench.results import RESULTS_SCHEMA_VERSION, write_results
from tokbench.tasks.base import Task
from tokbench.tasks.cache import PRIVATE_PREFIX, SKIP_KEY
from tokbench.tasks.data import Dataset, parse_resolution, subset
from tokbench.tasks.grids import write_grids
from tokbench.tasks.report import write_report
from tokbench.version import __version__


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def tokenizer_block(cfg, tokenizer, rows_by_task: dict[str, list[dict]]) -> dict:
    """The tokenizer's entry, with its rate at the evaluation resolution (``rate_resolution``).

    Bits and tokens per image are measured from the tokens of every scored image, the same
    way for codecs (their coded size) and learned tokenizers (tokens x log2 vocabulary), and
    averaged over all per-image tasks; under ``native`` they vary with the image size. A run
    with dataset-level tasks only takes them from the layout at the evaluation size.
    """
    rows = [r for task_rows in rows_by_task.values() for r in task_rows]
    bits = _mean([r["bits"] for r in rows if r.get("bits") is not None])
    tokens = _mean([r["tokens"] for r in rows if r.get("tokens") is not None])
    if not rows:
        _, size = parse_resolution(cfg.resolution)
        s = tokenizer.stride
        side = -(-(size or 256) // s) * s
        layout = tokenizer.layout_for(side, side)
        bits = layout.bits_per_image
        tokens = layout.num_tokens if layout.arrangement != "bytes" else None
    return {
        "name": cfg.tokenizer, "family": tokenizer.family, "kind": tokenizer.kind, "config": tokenizer.config,
        "checkpoint_sha256": checkpoint_sha256(cfg.tokenizer), "parameters": tokenizer.num_parameters(),
        "tokens_per_image": tokens, "bits_per_image": bits, "rate_resolution": cfg.resolution,
    }


def dataset_block(cfg, dataset: Dataset, num_images: int) -> dict:
    """A dataset's entry in ``results["datasets"]``: what the leaderboard matches suites by."""
    return {"name": dataset.name, "source": dataset.source, "version": dataset.version,
            "fingerprint": dataset.fingerprint(), "num_images": num_images, "resolution": cfg.resolution}


def ordered_rows(cfg, dataset: Dataset, task_name: str, rows: dict[str, dict]) -> tuple[list[dict], list[dict]]:
    """(scored rows, skipped files ``{file, reason}``) in dataset order, from every rank's rows."""
    order = [it.id for it in subset(dataset.items, cfg.limit)]
    missing = [i for i in order if i not in rows]
    if missing:
        raise RuntimeError(f"{task_name}: {len(missing)} images have no score (first: {missing[0]}); rerun to resume")
    scored = [rows[i] for i in order if SKIP_KEY not in rows[i]]
    skipped = [{"file": i, "reason": rows[i][SKIP_KEY]} for i in order if SKIP_KEY in rows[i]]
    if not scored:
        raise RuntimeError(f"{task_name}: none of the {len(order)} images of {dataset.name} could be read "
                           f"(first: {skipped[0]['file']}: {skipped[0]['reason']})")
    return scored, skipped


def per_image_block(cfg, task: Task, ctx, dataset: Dataset, rows_by_id: dict) -> tuple[dict, list[dict]]:
    """A per-image task's results block, and its scored rows in dataset order."""
    rows, skipped_files = ordered_rows(cfg, dataset, task.name, rows_by_id)
    summary = task.aggregate(rows, ctx)
    task_bits = [r["bits"] for r in rows if r.get("bits") is not None]
    if task_bits:  # codecs' size depends on the content: each task's own mean
        summary.extra["mean_bits_per_image"] = sum(task_bits) / len(task_bits)
    skipped = {**{m: r for m, r in ctx.skipped.items() if m in task.metric_names()}, **summary.skipped_metrics}
    block = {"dataset": dataset.name, "num_images": len(rows), "num_skipped": len(skipped_files),
             "skipped": skipped_files, "metrics": summary.metrics, "skipped_metrics": skipped, "extra": summary.extra}
    return block, rows


def assemble_results(cfg, tokenizer, ctx, tasks: list[Task], datasets: dict[str, Dataset], rows_by_id: dict,
                     dataset_task_blocks: dict[str, dict]) -> tuple[dict, dict[str, list[dict]]]:
    """The results object (tasks in the order asked for) and each per-image task's rows in dataset order."""
    task_blocks, rows_by_task, dataset_blocks = {}, {}, {}
    for task in tasks:
        if task.name in dataset_task_blocks:
            block = dataset_task_blocks[task.name]
        else:
            block, rows_by_task[task.name] = per_image_block(cfg, task, ctx, datasets[task.name], rows_by_id[task.name])
        task_blocks[task.name] = block
        dataset = datasets[task.name]
        dataset_blocks.setdefault(dataset.name, dataset_block(cfg, dataset, block["num_images"] + block["num_skipped"]))
    results = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "tokbench": {"version": __version__, "git_commit": git_commit()},
        "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "tokenizer": tokenizer_block(cfg, tokenizer, rows_by_task),
        "datasets": list(dataset_blocks.values()),
        "tasks": task_blocks,
        "hardware": hardware(cfg.device),
    }
    return results, rows_by_task


def per_image_frame(rows_by_task: dict[str, list[dict]]) -> pd.DataFrame:
    frames = []
    for task, rows in rows_by_task.items():
        public = [{k: v for k, v in r.items() if not k.startswith(PRIVATE_PREFIX)} for r in rows]
        frame = pd.DataFrame(public)
        frame.insert(0, "task", task)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["task", "id"])


def write_outputs(cfg, results: dict, rows_by_task: dict, datasets: dict, tasks: list[Task],
                  extra_grids: dict[str, str] | None = None) -> None:
    """``results.json``, ``per_image.csv``, the comparison grids and the reports."""
    write_results(cfg.out / "results.json", results)
    atomic_write_text(cfg.out / "per_image.csv", per_image_frame(rows_by_task).to_csv(index=False))
    by_name = {t.name: t for t in tasks}
    grids = write_grids(cfg, rows_by_task, datasets, by_name)
    for name, path in (extra_grids or {}).items():  # dataset-level tasks' grids, with their own caption
        grids[name] = {"path": path, "caption": f"{name}: {by_name[name].grid_caption}"}
    write_report(cfg.out, [results], grids=grids)
