"""The `generation` task: how well a small AR prior models the tokenizer's tokens.

Unlike the other tasks it is not scored image by image: the prior is fitted on the tokens of
most of the dataset's images and scored on the held-out rest (`tokbench.generation.evaluate`).
It runs on rank 0 only (a small CPU/GPU job), after the per-image tasks, and caches its block
in ``OUT/cache/generation.json`` so that a resumed run does not fit the prior again.
"""
from __future__ import annotations

import json

import torch

from tokbench.atomic import atomic_write_text
from tokbench.generation.evaluate import GenerationSettings, evaluate_generation
from tokbench.generation.sequence import generation_order
from tokbench.imageio import save_png
from tokbench.tasks.base import MetricContext, Task, metric_entry
from tokbench.tasks.data import BadImageError, Dataset, parse_resolution, subset

GFID_REASON = "gFID of the prior's samples is not computed yet (it needs thousands of samples)"


def settings_for(cfg) -> GenerationSettings:
    _, size = parse_resolution(cfg.resolution)
    return GenerationSettings(image_size=size or 256, steps=cfg.gen_steps)


class GenerationTask(Task):
    name, default_suite, primary = "generation", "photos", "nll_bits_per_image"
    metrics = ("nll_bits_per_image", "nll_bits_per_token", "nll_fraction_of_raw", "gfid")
    scoring = "dataset"
    grid_caption = "samples of the AR prior fitted on the tokens, decoded"

    @classmethod
    def pinned(cls, cfg) -> dict:
        return {"gen_steps": cfg.gen_steps}

    def check_applicable(self, tokenizer, cfg) -> None:
        """Fails before any work for tokenizers without discrete, fixed-length tokens."""
        if cfg.gen_steps < 1:
            raise ValueError(f"--gen-steps must be >= 1, got {cfg.gen_steps}")
        size = settings_for(cfg).image_size
        try:
            generation_order(tokenizer.layout_for(size, size))
        except ValueError as err:
            raise ValueError(f"--tasks generation: {err}") from None

    def run_dataset(self, cfg, tokenizer, dataset: Dataset, ctx: MetricContext) -> tuple[dict, dict[str, str]]:
        cache = cfg.out / "cache" / f"{self.name}.json"
        grids = {self.name: f"grids/{self.name}.png"}
        if cache.is_file() and (cfg.out / grids[self.name]).is_file():
            return json.loads(cache.read_text()), grids
        images, skipped = [], []
        for item in subset(dataset.items, cfg.limit):
            try:
                images.append(item.pixels())
            except BadImageError as err:
                skipped.append({"file": item.id, "reason": str(err).splitlines()[0]})
        result = evaluate_generation(tokenizer, images, settings_for(cfg), device=cfg.device)
        save_png(torch.cat(list(result.samples_B3HW), dim=-1), cfg.out / grids[self.name])  # samples side by side
        block = {"dataset": dataset.name, "num_images": len(images), "num_skipped": len(skipped), "skipped": skipped,
                 "metrics": {name: metric_entry(name, values) for name, values in result.metrics.items()},
                 "skipped_metrics": {"gfid": GFID_REASON}, "extra": result.extra}
        atomic_write_text(cache, json.dumps(block, indent=2))
        return block, grids
