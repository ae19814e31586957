"""`GenerationSettings`: the knobs of the `generation` measure (`tokbench.generation.evaluate`).

A module of its own, free of Lightning and the models, so that the `generation` task -- which
every `tokbench` command loads to build its options -- stays cheap to import.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GenerationSettings:
    # Defaults for small suites (the 14 built-in photos): many augmented crops and a small
    # generator. With 16 crops per image a 4 x 256 model overfit its 176 sequences within 500
    # steps (held-out NLL 1.5x the raw bits, vq_tiny at 32 px); 64 crops and 2 x 128 held out at 0.85x.
    image_size: int = 256
    crops_per_image: int = 64
    val_every: int = 4  # every 4th image is held out
    steps: int = 300
    batch_size: int = 32
    arch: str = "auto"  # gpt (discrete) / mar (continuous); or next_scale for multi-scale residual tokenizers
    preset: str = "tiny"
    width: int | None = 128  # overrides of the preset's size (None: the preset's)
    depth: int | None = None
    heads: int | None = None
    lr: float = 1e-3
    num_samples: int = 8
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    diffusion_steps: int = 100  # continuous tokenizers: reverse-diffusion steps per sampled token
    seed: int = 0
