"""Drawing images from a trained generator into a sample folder (`tokbench gen sample`).

Sample ``i`` belongs to batch ``i // batch_size``; each batch draws from a generator seeded
by ``(seed, batch)``, so a set of samples is the same for any number of ranks (rank ``r``
takes batches ``r, r + N, ...``) and a stopped run resumes by skipping batches whose PNGs
are all written. Classes cycle through the requested list (``all``: 0, 1, ..., as the ADM
evaluation sets are balanced). ``manifest.json`` records the generator, its tokenizer and
the sampling settings; ``--format npz`` also packs the PNGs into ADM's ``samples.npz``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tokbench.atomic import atomic_path, atomic_write_text
from tokbench.distributed import barrier
from tokbench.generation.checkpoint import WEIGHTS_NAME, load_generator
from tokbench.generation.sampling import check_sampling
from tokbench.generation.sequence import from_sequence, latents_from_sequence
from tokbench.generation.token_data import load_checked_tokenizer
from tokbench.imageio import read_image, save_png, uint8_to_tensor
from tokbench.provenance import file_sha256
from tokbench.tokens import TokenLayout

MANIFEST = "manifest.json"
CLASS_GRID = "grid_by_class.png"  # up to 16 classes x 8 samples: what the report shows


@dataclass
class SamplingSettings:
    cfg: float = 1.0
    cfg_interval: tuple[float, float] = (0.0, 1.0)  # next-token GPT: fraction of the steps guided
    cfg_schedule: str = "linear"  # next-scale: VAR's ramp over the maps; mar: MAR's over the tokens; or "constant"
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    diffusion_steps: int = 100  # continuous (mar) generators: reverse-diffusion steps per token
    seed: int = 0


def parse_classes(text: str, num_classes: int, names: list[str] | None) -> list[int] | None:
    """``all`` -> every class; ``3,7`` or class names -> those; ``None`` for an unconditional generator."""
    if num_classes == 0:
        if text not in ("all", ""):
            raise ValueError("--classes: this generator is unconditional (trained on unlabelled tokens)")
        return None
    if text == "all":
        return list(range(num_classes))
    chosen = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part.lstrip("-").isdigit() and not (names and part in names):
            k = int(part)
        elif names and part in names:
            k = names.index(part)
        else:
            raise ValueError(f"--classes: {part!r} is neither a class index nor a class name of this generator "
                             f"(classes: {', '.join((names or [])[:10])}{', ...' if names and len(names) > 10 else ''})")
        if not 0 <= k < num_classes:
            raise ValueError(f"--classes: index {k} is outside [0, {num_classes})")
        chosen.append(k)
    if not chosen:
        raise ValueError("--classes: give 'all' or a comma-separated list of class indices or names")
    return chosen


def load_matching_tokenizer(config: dict, override: str | None, device: str):
    """The generator's tokenizer (or ``override``), refused when its weights differ from the recorded ones."""
    recorded = config["tokenizer"]
    return load_checked_tokenizer(override or recorded["spec"], recorded.get("sha256"),
                                  "the generator was trained on", device)


def draw_batch(model, tokenizer, layout, labels_B: torch.Tensor | None, num: int, s: SamplingSettings,
               generator: torch.Generator, image_size: tuple[int, int]) -> torch.Tensor:
    """``(B, 3, H, W)`` decoded samples in [0, 1]."""
    if model.arch == "mar":
        x_BLC = model.generate(labels_B, num=num, cfg=s.cfg, cfg_interval=tuple(s.cfg_interval),
                               cfg_schedule=s.cfg_schedule, temperature=s.temperature,
                               diffusion_steps=s.diffusion_steps, generator=generator)
        with torch.no_grad():
            return tokenizer.decode(latents_from_sequence(x_BLC, layout, image_size)).clamp(0, 1)
    common = dict(cfg=s.cfg, temperature=s.temperature, top_k=s.top_k or None,
                  top_p=s.top_p if s.top_p < 1 else None, generator=generator)
    if model.arch == "next_scale":
        ids_BL = model.generate(tokenizer, layout, labels_B, num=num, cfg_schedule=s.cfg_schedule, **common)
    else:
        ids_BL = model.generate(labels_B, num=num, cfg_interval=tuple(s.cfg_interval), **common)
    with torch.no_grad():
        return tokenizer.decode(from_sequence(ids_BL, layout, image_size)).clamp(0, 1)


def sample_to_folder(generator_dir: str | Path, out: str | Path, num: int, settings: SamplingSettings,
                     classes: str = "all", batch_size: int = 32, device: str = "cpu", tokenizer: str | None = None,
                     npz: bool = False, rank: int = 0, world_size: int = 1, progress: bool = True,
                     compile: bool = False) -> Path:
    """Write ``num`` samples as ``out/000000.png ...`` (+ ``manifest.json``, ``samples.npz``);
    ``compile``: through `tokbench.generation.compile.compile_sampling`."""
    s = settings
    check_sampling(s.temperature, s.top_k, s.top_p if s.top_p < 1 else None, s.cfg)
    if num < 1 or batch_size < 1:
        raise ValueError(f"--num and --batch-size must be >= 1, got {num} and {batch_size}")
    model, config = load_generator(generator_dir, device)
    if compile:
        from tokbench.generation.compile import compile_sampling

        compile_sampling(model, device)
    tok = load_matching_tokenizer(config, tokenizer, device)
    layout = TokenLayout.from_dict(config["layout"])
    side = int(config.get("resolution") or 256)
    class_list = parse_classes(classes, model.num_classes, config.get("classes"))
    labels_N = None if class_list is None else torch.tensor([class_list[i % len(class_list)] for i in range(num)])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [f"{i:06d}.png" for i in range(num)]
    if rank == 0:
        manifest = {"format": "tokbench-samples", "version": 1,
                    "generator": {"preset": config["preset"], "arch": config["arch"], "parameters": config["parameters"],
                                  "checkpoint_sha256": file_sha256(Path(generator_dir) / WEIGHTS_NAME), "train_steps": config["train_steps"],
                                  "path": str(Path(generator_dir).resolve())},
                    "tokenizer": {**config["tokenizer"], "spec": tokenizer or config["tokenizer"]["spec"]},
                    "sampling": {**asdict(s), "cfg_interval": list(s.cfg_interval), "classes": classes,
                                 "batch_size": batch_size},
                    "num_samples": num, "resolution": side, "files": files, "compiled": compile,
                    "labels": None if labels_N is None else labels_N.tolist(),
                    "class_names": config.get("classes")}
        atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    batches = [b for b in range(math.ceil(num / batch_size)) if b % world_size == rank]
    bar = _progress(len(batches), progress and rank == 0)
    for b in batches:
        lo, hi = b * batch_size, min(num, (b + 1) * batch_size)
        if all((out / f).is_file() for f in files[lo:hi]):
            bar.update(1)
            continue
        g = torch.Generator(device=device).manual_seed(s.seed * 1_000_003 + b)
        labels = None if labels_N is None else labels_N[lo:hi].to(device)
        images = draw_batch(model, tok, layout, labels, hi - lo, s, g, (side, side))
        for i, x_3HW in zip(range(lo, hi), images.cpu()):
            save_png(x_3HW, out / files[i])
        bar.update(1)
    bar.close()
    barrier()  # every rank's PNGs are written
    if rank == 0:
        write_class_grid(out, files, labels_N)
        if npz:
            pack_npz(out, files, labels_N)
    return out


def tile(images_B3HW: torch.Tensor, per_row: int) -> torch.Tensor:
    """Images side by side, ``per_row`` to a row, 2 px white gaps."""
    from torchvision.utils import make_grid  # torchvision takes seconds to import: only when a grid is drawn

    return make_grid(images_B3HW, nrow=per_row, padding=2, pad_value=1.0)


def write_class_grid(out: Path, files: list[str], labels_N: torch.Tensor | None, classes: int = 16,
                     per_class: int = 8) -> Path:
    """``grid_by_class.png``: one row per class (the first ``classes`` sampled), ``per_class`` samples each;
    an unconditional set gives rows of its first samples."""
    load = lambda i: uint8_to_tensor(read_image(out / files[i]))  # noqa: E731
    if labels_N is None:
        images = [load(i) for i in range(min(len(files), classes * per_class))]
        nrow = min(per_class, len(images))
    else:
        images = []
        for c in list(dict.fromkeys(labels_N.tolist()))[:classes]:
            row = [load(i) for i in (labels_N == c).nonzero().flatten().tolist()[:per_class]]
            images += row + [torch.ones_like(row[0])] * (per_class - len(row))  # blank: a row is one class
        nrow = per_class
    grid = tile(torch.stack(images), nrow)
    save_png(grid, out / CLASS_GRID)
    return out / CLASS_GRID


def pack_npz(out: Path, files: list[str], labels_N: torch.Tensor | None) -> Path:
    """``samples.npz`` as ADM's evaluator reads it: ``arr_0`` uint8 ``(N, H, W, 3)`` (+ ``arr_1`` labels)."""
    images = np.stack([read_image(out / f) for f in files])
    arrays = {"arr_0": images} if labels_N is None else {"arr_0": images, "arr_1": labels_N.numpy()}
    with atomic_path(out / "samples.npz", suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return out / "samples.npz"


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="sampling", unit="batch", disable=not enabled)
