"""The `generation` task: how well a small AR generator models the tokenizer's tokens -- the
quick, fixed-protocol version of `tokbench gen` (encode, fit, sample, score).

Unlike the other tasks it is not scored image by image: the generator is fitted on the tokens
of most of the dataset's images and scored on the held-out rest (`tokbench.generation.evaluate`).
It runs on rank 0 only (a small CPU/GPU job), after the per-image tasks, and caches its block
in ``OUT/cache/generation.json`` so that a resumed run does not fit again. gFID of its samples
is computed where at least ``--fid-min-images`` samples are requested (``--gen-samples``),
against the dataset's images at the same resolution.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from tokbench.atomic import atomic_write_text
from tokbench.generation.image_labels import folder_labels
from tokbench.generation.presets import build_generator, default_arch
from tokbench.generation.sample import tile
from tokbench.generation.sampling import check_sampling
from tokbench.generation.settings import GenerationSettings
from tokbench.imageio import resize_center_crop, save_png, to_uint8, uint8_to_tensor
from tokbench.metrics.fid import fid_from_features
from tokbench.metrics.networks import load_networks, missing_weights
from tokbench.tasks.base import MetricContext, Task, dataset_metric_entry, metric_entry
from tokbench.tasks.data import BadImageError, Dataset, parse_resolution, subset
from tokbench.weights import MissingWeightsError
from tokbench.weights import require as require_weights

# --gen-X option -> GenerationSettings field, type, help
OPTIONS = {
    "steps": (int, "training steps of the generator (300)"),
    "preset": (str, "generator size: tiny (default, widened to 128), B, L, d16"),
    "arch": (str, "auto (default: gpt for discrete tokens, mar for continuous ones), gpt, next_scale (VAR; "
                  "multi-scale residual tokenizers) or mar (MAR's diffusion head; continuous tokens)"),
    "crops": (int, "random crops per image for training and held-out scoring (64)"),
    "samples": (int, "samples to draw (8); gFID needs at least --fid-min-images"),
    "temperature": (float, "sampling temperature (1.0)"),
    "top_k": (int, "sampling: keep the k most likely tokens (0 = all)"),
    "top_p": (float, "sampling: nucleus mass (1 = off)"),
    "diffusion_steps": (int, "continuous tokenizers: reverse-diffusion steps per sampled token (100)"),
}
FIELD = {"crops": "crops_per_image", "samples": "num_samples"}


def settings_for(cfg) -> GenerationSettings:
    _, size = parse_resolution(cfg.resolution)
    options = {FIELD.get(k, k): v for k, v in cfg.task_options.get("generation", {}).items()}
    if options.get("preset") not in (None, "tiny"):
        options.setdefault("width", None)  # a named size keeps its own width
    return GenerationSettings(image_size=size or 256, **options)


class GenerationTask(Task):
    name, default_suite, primary = "generation", "photos", "nll_bits_per_image"
    headline = ("nll_bits_per_image", "gfid", "inception_score", "nll_bits_per_token")
    metrics = ("nll_bits_per_image", "nll_bits_per_token", "nll_fraction_of_raw", "unigram_bits_per_image",
               "diffusion_loss", "ar_probe_top1", "latent_probe_top1", "gfid")
    scoring = "dataset"
    grid_caption = "samples of the AR generator fitted on the tokens, decoded"

    @classmethod
    def add_arguments(cls, parser) -> None:
        group = parser.add_argument_group("generation task (--tasks generation)")
        for name, (kind, text) in OPTIONS.items():
            group.add_argument(f"--gen-{name.replace('_', '-')}", dest=f"gen_{name}", type=kind, help=text)

    @classmethod
    def options_from_args(cls, args) -> dict:
        return {name: value for name in OPTIONS if (value := getattr(args, f"gen_{name}", None)) is not None}

    @classmethod
    def pinned(cls, cfg) -> dict:
        return {"generation": asdict(settings_for(cfg))}

    def check_applicable(self, tokenizer, cfg) -> None:
        """Fails before any work for tokenizers without discrete, fixed-length tokens, or bad options."""
        s = settings_for(cfg)
        if s.steps < 1 or s.crops_per_image < 1 or s.num_samples < 1:
            raise ValueError(f"--gen-steps, --gen-crops and --gen-samples must be >= 1, got {s.steps}, "
                             f"{s.crops_per_image} and {s.num_samples}")
        check_sampling(s.temperature, s.top_k, s.top_p, 1.0)
        if wants_gfid(cfg, s):  # before any work: gFID uses rFID's Inception
            try:
                require_weights(["rfid"], cfg.weights_dir)
            except MissingWeightsError:
                if getattr(cfg, "strict_metrics", True):
                    raise
                # the default: gFID is skipped, named with the reason (the runner announces it)
                cfg.missing_weights["gfid"] = missing_weights(["rfid"], cfg.weights_dir)["rfid"]
                cfg.skip_metrics = sorted({*cfg.skip_metrics, "gfid"})
        try:
            layout = tokenizer.layout_for(s.image_size, s.image_size)
            arch = default_arch(layout) if s.arch == "auto" else s.arch
            with torch.device("meta"):  # checks arch, layout and preset without allocating any weights
                build_generator(arch, layout, 0, s.preset, code_dim=getattr(tokenizer, "code_dim", None),
                                width=s.width, depth=s.depth, heads=s.heads)
        except ValueError as err:
            raise ValueError(f"--tasks generation: {err}") from None

    def run_dataset(self, cfg, tokenizer, dataset: Dataset, ctx: MetricContext) -> tuple[dict, dict[str, str]]:
        cache = cfg.out / "cache" / f"{self.name}.json"
        grids = {self.name: f"grids/{self.name}.png"}
        if cache.is_file() and (cfg.out / grids[self.name]).is_file():
            return json.loads(cache.read_text()), grids
        images, ids, skipped = [], [], []
        for item in subset(dataset.items, cfg.limit):
            try:
                images.append(item.pixels())
                ids.append(item.id)
            except BadImageError as err:
                skipped.append({"file": item.id, "reason": str(err).splitlines()[0]})
        settings = settings_for(cfg)
        labels, no_labels = class_labels(dataset, ids)
        result = evaluate_generation(tokenizer, images, settings, device=cfg.device, labels=labels)
        save_png(sample_grid(result.samples_B3HW[:64]), cfg.out / grids[self.name])
        metrics = {name: metric_entry(name, values) for name, values in result.metrics.items()}
        skipped_metrics = {name: no_labels or reason for name, reason in result.skipped.items()}
        if settings.num_samples < cfg.fid_min_images:
            skipped_metrics["gfid"] = (f"{settings.num_samples} samples (--gen-samples); gFID needs at least "
                                       f"{cfg.fid_min_images} (--fid-min-images)")
        elif not wants_gfid(cfg, settings):
            missing = getattr(cfg, "missing_weights", {})
            skipped_metrics["gfid"] = (missing.get("gfid") or missing.get("rfid")
                                       or "skipped with --skip-metric (gFID uses rFID's Inception)")
        else:
            features = inception_features(cfg, ctx)
            metrics["gfid"] = dataset_metric_entry("gfid", sample_fid(result.samples_B3HW, images, settings.image_size,
                                                                     features), len(result.samples_B3HW))
        block = {"dataset": dataset.name, "num_images": len(images), "num_skipped": len(skipped), "skipped": skipped,
                 "metrics": metrics, "skipped_metrics": skipped_metrics, "extra": result.extra}
        atomic_write_text(cache, json.dumps(block, indent=2))
        return block, grids


def class_labels(dataset: Dataset, ids: list[str]) -> tuple[list[int] | None, str | None]:
    """``(a class per image, None)`` for a labelled folder (ImageFolder layout: the top-level
    subfolder is the class), else ``(None, why there are no labels)`` for the probes."""
    if dataset.source != "folder":
        return None, (f"no class labels: the built-in suite {dataset.name!r} is unlabelled; give --data a folder "
                      "of class subfolders (DIR/CLASS/IMAGE)")
    try:
        labels, classes, _ = folder_labels(Path(dataset.name), ids)
    except ValueError as err:
        return None, f"no class labels: {err}"
    if classes is None:
        return None, "no class labels: the --data folder is flat (class subfolders DIR/CLASS/IMAGE give them)"
    return labels.tolist(), None


def wants_gfid(cfg, settings: GenerationSettings) -> bool:
    """Whether this run computes gFID: enough samples requested and the metric not skipped."""
    return (settings.num_samples >= cfg.fid_min_images
            and "rfid" not in cfg.skip_metrics and "gfid" not in cfg.skip_metrics)


def inception_features(cfg, ctx: MetricContext):
    """rFID's Inception feature function (already loaded when the reconstruction task runs too)."""
    return ctx.networks.get("rfid") or load_networks(["rfid"], [], cfg.weights_dir, cfg.device)["rfid"]


def evaluate_generation(tokenizer, images, settings: GenerationSettings, device: str, labels: list[int] | None = None):
    """`tokbench.generation.evaluate.evaluate_generation`, imported on first use: it brings in
    Lightning, and this module is imported by every `tokbench` command (for its options)."""
    from tokbench.generation.evaluate import evaluate_generation as evaluate

    return evaluate(tokenizer, images, settings, device=device, labels=labels)


def sample_grid(samples_B3HW: torch.Tensor) -> torch.Tensor:
    """Samples in rows of 8."""
    return tile(samples_B3HW, min(8, len(samples_B3HW)))


def center_crops(images: list[np.ndarray], size: int) -> torch.Tensor:
    """The dataset's images as the generator sees them (the evaluation's shorter-side resize and
    center crop), uint8 ``(N, 3, size, size)``."""
    return torch.stack([to_uint8(resize_center_crop(uint8_to_tensor(image), size)) for image in images])


def sample_fid(samples_B3HW: torch.Tensor, images: list[np.ndarray], size: int, features) -> float:
    """gFID of the samples against the dataset's center crops (same Inception as rFID)."""
    fake = torch.cat([features(to_uint8(samples_B3HW[i:i + 64])) for i in range(0, len(samples_B3HW), 64)])
    real_u8 = center_crops(images, size)
    real = torch.cat([features(real_u8[i:i + 64]) for i in range(0, len(real_u8), 64)])
    return fid_from_features(real.numpy(), fake.numpy())
