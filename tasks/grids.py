"""Comparison grids: original | reconstruction | amplified difference for the worst, median
and best image of each task (by the task's primary metric)."""
from __future__ import annotations

import math

import torch

from tokbench.imageio import load_image, save_png
from tokbench.tasks.data import crop_content, prepare

DIFF_GAIN = 4.0  # |difference| is multiplied by this so small errors are visible


def pick_worst_median_best(rows: list[dict], metric: str, higher_is_better: bool) -> list[tuple[str, dict]]:
    scored = [r for r in rows if r.get(metric) is not None and math.isfinite(r[metric])]
    if not scored:
        return []
    ranked = sorted(scored, key=lambda r: r[metric], reverse=not higher_is_better)  # worst first
    return [("worst", ranked[0]), ("median", ranked[len(ranked) // 2]), ("best", ranked[-1])]


def write_grids(cfg, rows_by_task: dict, datasets: dict, tasks: dict) -> dict[str, str]:
    from tokbench.tasks.runner import _safe_name

    written = {}
    for name, rows in rows_by_task.items():
        task = tasks[name]()
        rec_dir = cfg.out / "reconstructions" / name
        # under multi-node torchrun another machine may hold some reconstructions: pick among ours
        rows = [r for r in rows if (rec_dir / f"{_safe_name(r['id'])}.png").is_file()]
        picks = pick_worst_median_best(rows, task.primary, task.directions[task.primary])
        if not picks:
            continue
        by_id = {it.id: it for it in datasets[name].items}
        strips = []
        for _, row in picks:
            prepared = prepare(by_id[row["id"]].pixels(), cfg.resolution)
            original = crop_content(prepared.x_3HW, prepared)
            rec = load_image(rec_dir / f"{_safe_name(row['id'])}.png")
            diff = ((rec - original).abs() * DIFF_GAIN).clamp(0, 1)
            strips.append(torch.cat([original, rec, diff], dim=-1))
        width = max(s.shape[-1] for s in strips)
        strips = [torch.nn.functional.pad(s, (0, width - s.shape[-1]), value=1.0) for s in strips]
        path = cfg.out / "grids" / f"{name}.png"
        save_png(torch.cat(strips, dim=-2), path)
        written[name] = f"grids/{name}.png"
    return written
