"""The `generation` task: how well a small AR prior models the tokenizer's tokens.

Unlike the other tasks it is not scored image by image: the prior is fitted on the tokens of
most of the dataset's images and scored on the held-out rest (`tokbench.generation.evaluate`).
It runs on rank 0 only (a small CPU/GPU job), after the per-image tasks, and caches its block
in ``OUT/cache/generation.json`` so that a resumed run does not fit the prior again.
"""
from __future__ import annotations

import json

import torch

from tokbench.checkpoint import atomic_write_text
from tokbench.generation.evaluate import GenerationSettings, evaluate_generation
from tokbench.generation.sequence import generation_order
from tokbench.imageio import save_png
from tokbench.tasks.data import BadImageError, parse_resolution, subset

NAME = "generation"
DEFAULT_SUITE = "photos"
GFID_REASON = "gFID of the prior's samples is not computed yet (it needs thousands of samples)"


def settings_for(cfg) -> GenerationSettings:
    _, size = parse_resolution(cfg.resolution)
    return GenerationSettings(image_size=size or 256, steps=cfg.gen_steps)


def check_applicable(tokenizer, cfg) -> None:
    """Fails before any work for tokenizers without discrete, fixed-length tokens."""
    size = settings_for(cfg).image_size
    try:
        generation_order(tokenizer.layout_for(size, size))
    except ValueError as err:
        raise ValueError(f"--tasks generation: {err}") from None


def run_generation(cfg, tokenizer, dataset) -> tuple[dict, str]:
    """The task's results block and the path (relative to ``--out``) of its sample grid."""
    cache = cfg.out / "cache" / f"{NAME}.json"
    grid_rel = f"grids/{NAME}.png"
    if cache.is_file() and (cfg.out / grid_rel).is_file():
        return json.loads(cache.read_text()), grid_rel
    images, skipped = [], []
    for item in subset(dataset.items, cfg.limit):
        try:
            images.append(item.pixels())
        except BadImageError as err:
            skipped.append({"file": item.id, "reason": str(err).splitlines()[0]})
    result = evaluate_generation(tokenizer, images, settings_for(cfg), device=cfg.device)
    samples = result.samples_B3HW
    save_png(torch.cat(list(samples), dim=-1), cfg.out / grid_rel)  # the samples side by side
    block = {"dataset": dataset.name, "num_images": len(images), "num_skipped": len(skipped), "skipped": skipped,
             "metrics": result.metrics, "skipped_metrics": {"gfid": GFID_REASON}, "extra": result.extra}
    atomic_write_text(cache, json.dumps(block, indent=2))
    return block, grid_rel
