"""Comparison grids: original | reconstruction | amplified difference for the worst, median
and best image of each task (by the task's primary metric), captioned in the image itself."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from tokbench.imageio import load_image, save_png, uint8_to_tensor
from tokbench.metrics.registry import get_metric
from tokbench.tasks.cache import safe_name
from tokbench.tasks.data import crop_content, prepare

DIFF_GAIN = 4.0  # |difference| is multiplied by this so small errors are visible
COLUMNS = f"original | reconstruction | difference x{DIFF_GAIN:g}"
CAPTION_FONT_PX = 16  # caption text size in the grid PNGs (cap height ~12 px: readable at 100% zoom)
CAPTION_PAD = 4


def pick_worst_median_best(rows: list[dict], metric: str, higher_is_better: bool) -> list[tuple[str, dict]]:
    scored = [r for r in rows if r.get(metric) is not None and math.isfinite(r[metric])]
    if not scored:
        return []
    ranked = sorted(scored, key=lambda r: r[metric], reverse=not higher_is_better)  # worst first
    return [("worst", ranked[0]), ("median", ranked[len(ranked) // 2]), ("best", ranked[-1])]


def _wrap(text: str, font, width: int) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels (a long word stays whole)."""
    lines, current = [], ""
    for word in text.split(" "):
        candidate = f"{current} {word}".strip()
        if current and font.getlength(candidate) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    return lines + [current]


def _label(text: str, width: int) -> torch.Tensor:
    """A white strip ``(3, h, width)`` with ``text`` in black at ``CAPTION_FONT_PX``, wrapped to fit."""
    font = ImageFont.load_default(size=CAPTION_FONT_PX)
    lines = _wrap(text, font, width - 2 * CAPTION_PAD)
    line_height = CAPTION_FONT_PX + 4
    strip = Image.new("RGB", (width, line_height * len(lines) + 2 * CAPTION_PAD), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for i, line in enumerate(lines):
        draw.text((CAPTION_PAD, CAPTION_PAD + i * line_height), line, fill=(0, 0, 0), font=font)
    return uint8_to_tensor(np.asarray(strip))


def _number(value: float) -> str:
    return f"{value:.3g}"


def write_grids(cfg, rows_by_task: dict, datasets: dict, tasks: dict) -> dict[str, dict]:
    """``task -> {"path", "caption"}`` for each per-image task with scored images."""
    written = {}
    for name, rows in rows_by_task.items():
        task = tasks[name]
        rec_dir = cfg.out / "reconstructions" / name
        # under multi-node torchrun another machine may hold some reconstructions: pick among ours
        rows = [r for r in rows if (rec_dir / f"{safe_name(r['id'])}.png").is_file()]
        metric = get_metric(task.primary)
        picks = pick_worst_median_best(rows, metric.name, metric.higher_is_better)
        if not picks:
            continue
        by_id = {it.id: it for it in datasets[name].items}
        strips, described = [], []
        for rank, row in picks:
            prepared = prepare(by_id[row["id"]].pixels(), cfg.resolution, cfg.preprocessing)
            original = crop_content(prepared.x_3HW, prepared)
            rec = load_image(rec_dir / f"{safe_name(row['id'])}.png")
            diff = ((rec - original).abs() * DIFF_GAIN).clamp(0, 1)
            strip = torch.cat([original, rec, diff], dim=-1)
            text = f"{rank}: {row['id']} ({metric.title} {_number(row[metric.name])} {metric.unit})".rstrip()
            strips.append(torch.cat([_label(text, strip.shape[-1]), strip], dim=-2))
            described.append(text)
        width = max(s.shape[-1] for s in strips)
        strips = [torch.nn.functional.pad(s, (0, width - s.shape[-1]), value=1.0) for s in strips]
        path = cfg.out / "grids" / f"{name}.png"
        save_png(torch.cat([_label(COLUMNS, width), *strips], dim=-2), path)
        caption = f"{name}: worst, median and best image by {metric.title} ({'; '.join(described)}); columns: {COLUMNS}"
        written[name] = {"path": f"grids/{name}.png", "caption": caption}
    return written

