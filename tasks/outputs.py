"""Assembling ``results.json`` and ``per_image.csv`` from the cached per-image rows."""
from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

import pandas as pd
import torch

from tokbench.checkpoint import atomic_write_text
from tokbench.commands.info import checkpoint_sha256
from tokbench.results import RESULTS_SCHEMA_VERSION, write_results
from tokbench.version import __version__

PRIVATE_PREFIX = "_"  # row keys such as _fid_real hold features, not metrics


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def hardware(device: str) -> dict:
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else None
    return {"device": device, "gpu": gpu, "cpu_count": os.cpu_count() or 1, "torch": torch.__version__,
            "platform": platform.platform()}


def tokenizer_block(cfg, tokenizer, measured_bits: list[float]) -> dict:
    layout = tokenizer.layout_for(256, 256)
    fixed_tokens = layout.arrangement != "bytes"
    bits = layout.bits_per_image
    if bits is None and measured_bits:  # codecs: the mean coded size over the scored images
        bits = sum(measured_bits) / len(measured_bits)
    return {
        "name": cfg.tokenizer, "family": tokenizer.family, "kind": tokenizer.kind, "config": tokenizer.config,
        "checkpoint_sha256": checkpoint_sha256(cfg.tokenizer), "parameters": tokenizer.num_parameters(),
        "tokens_per_image": layout.num_tokens if fixed_tokens else None, "bits_per_image": bits,
    }


def dataset_block(cfg, dataset, num_images: int) -> dict:
    """A dataset's entry in ``results["datasets"]``: what the leaderboard matches suites by."""
    return {"name": dataset.name, "source": dataset.source, "version": dataset.version,
            "fingerprint": dataset.fingerprint(), "num_images": num_images, "resolution": cfg.resolution}


def ordered_rows(cfg, dataset, task_name: str, rows: dict[str, dict]) -> tuple[list[dict], list[dict]]:
    """(scored rows, skipped files ``{file, reason}``) in dataset order, from every rank's rows."""
    from tokbench.tasks.data import subset
    from tokbench.tasks.runner import SKIP_KEY

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


def assemble_results(cfg, tokenizer, ctx, datasets: dict, tasks: dict, rows_by_id: dict) -> tuple[dict, dict]:
    """The results object and each task's rows in dataset order, from the gathered per-image rows."""
    rows_by_task, task_blocks, dataset_blocks, bits = {}, {}, {}, []
    for name in cfg.tasks:
        dataset = datasets[name]
        rows, skipped_files = ordered_rows(cfg, dataset, name, rows_by_id[name])
        rows_by_task[name] = rows
        bits += [r["bits"] for r in rows if r.get("bits") is not None]
        metrics, extra, skipped = tasks[name]().aggregate(rows, ctx)
        task_bits = [r["bits"] for r in rows if r.get("bits") is not None]
        if task_bits:  # codecs' size depends on the content: the tokenizer block mixes every task
            extra["mean_bits_per_image"] = sum(task_bits) / len(task_bits)
        skipped = {**{m: r for m, r in ctx.skipped.items() if m in ("lpips", "rfid") and (m != "rfid" or name == "reconstruction")},
                   **skipped}
        task_blocks[name] = {
            "dataset": dataset.name, "num_images": len(rows), "num_skipped": len(skipped_files),
            "skipped": skipped_files, "metrics": metrics, "skipped_metrics": skipped, "extra": extra,
        }
        dataset_blocks[dataset.name] = dataset_block(cfg, dataset, len(rows) + len(skipped_files))
    results = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "tokbench": {"version": __version__, "git_commit": git_commit()},
        "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "tokenizer": tokenizer_block(cfg, tokenizer, bits),
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


def add_dataset_block(results: dict, cfg, dataset, num_images: int) -> None:
    """List ``dataset`` in ``results["datasets"]`` unless a per-image task already did."""
    if all(d["name"] != dataset.name for d in results["datasets"]):
        results["datasets"].append(dataset_block(cfg, dataset, num_images))


def write_outputs(cfg, results: dict, rows_by_task: dict, datasets: dict, tasks: dict,
                  extra_grids: dict[str, str] | None = None) -> None:
    from tokbench.tasks.grids import write_grids
    from tokbench.tasks.report import write_report

    write_results(cfg.out / "results.json", results)
    atomic_write_text(cfg.out / "per_image.csv", per_image_frame(rows_by_task).to_csv(index=False))
    grids = {**write_grids(cfg, rows_by_task, datasets, tasks), **(extra_grids or {})}
    write_report(cfg.out, [results], grids=grids)
