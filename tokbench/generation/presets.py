"""Generator sizes and how a generator is built for a token dataset's layout.

| preset | layers x width, heads | reference |
|---|---|---|
| ``tiny`` | 2 x 64, 4 | CI: seconds on a CPU |
| ``B`` | 12 x 768, 12 | LlamaGen GPT-B (111M parameters with a 16,384-code tokenizer) |
| ``L`` | 24 x 1024, 16 | LlamaGen GPT-L (343M) |
| ``d16`` | 16 x 1024, 16 | VAR-d16 (310M; width = 64 x depth, heads = depth) |

``gpt`` (next token; raster order for grids -- 2D RoPE -- and 1D order for sequences and,
as the raster baseline, for scale maps), ``next_scale`` (VAR's next-scale prediction;
``scales`` layouts only, needs the tokenizer's ``code_dim``) or ``mar`` (continuous tokens:
the GPT backbone with MAR's diffusion head; its size per preset in ``DIFFUSION_HEADS``,
MAR-B's head being 6 blocks x 1024).
"""
from __future__ import annotations

from torch import nn

from tokbench.generation.continuous import ContinuousGPT
from tokbench.generation.gpt import TokenGPT
from tokbench.generation.next_scale import NextScaleGPT
from tokbench.generation.sequence import generation_order
from tokbench.tokens import TokenLayout

PRESETS: dict[str, dict] = {
    "tiny": dict(width=64, depth=2, heads=4),
    "B": dict(width=768, depth=12, heads=12),
    "L": dict(width=1024, depth=24, heads=16),
    "d16": dict(width=1024, depth=16, heads=16),
}
# (head width, head depth) of the diffusion head per preset: MAR-B 1024 x 6, MAR-L 1280 x 8.
DIFFUSION_HEADS = {"tiny": (64, 2), "B": (1024, 6), "L": (1280, 8), "d16": (1024, 6)}
ARCHS = {"gpt": TokenGPT, "next_scale": NextScaleGPT, "mar": ContinuousGPT}


def default_arch(layout: TokenLayout) -> str:
    """``mar`` for continuous tokens, ``gpt`` for discrete ones."""
    return "mar" if layout.kind == "continuous" else "gpt"


def preset_options(preset: str, **overrides) -> dict:
    if preset not in PRESETS:
        raise ValueError(f"unknown generator preset {preset!r}; expected one of {', '.join(PRESETS)}")
    return {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}


def build_generator(arch: str, layout: TokenLayout, num_classes: int, preset: str = "tiny",
                    code_dim: int | None = None, **overrides) -> nn.Module:
    """A generator of ``arch`` and ``preset`` size for tokens of ``layout`` (``num_classes`` 0:
    unconditional)."""
    options = preset_options(preset, **overrides)
    if arch == "mar":
        if layout.kind != "continuous" or layout.arrangement not in ("grid", "sequence"):
            raise ValueError(f"the continuous (mar) generator models continuous latents on a grid or sequence, got "
                             f"{layout.kind} tokens in a {layout.arrangement!r} layout; use arch 'gpt' or 'next_scale'")
        head_width, head_depth = DIFFUSION_HEADS[preset]
        options = {"head_width": head_width, "head_depth": head_depth, **options}
        grid = layout.grid if layout.arrangement == "grid" else None
        return ContinuousGPT(layout.latent_channels, layout.num_tokens, num_classes, grid=grid, **options)
    if layout.kind == "continuous":
        raise ValueError(f"arch {arch!r} models discrete tokens; this tokenizer's tokens are continuous latents "
                         "(use arch 'mar')")
    generation_order(layout)  # clear error for codec tokens
    if arch == "gpt":
        grid = layout.grid if layout.arrangement == "grid" else None
        return TokenGPT(layout.vocab_size, layout.num_tokens, num_classes, grid=grid, **options)
    if arch == "next_scale":
        if layout.arrangement != "scales":
            raise ValueError(f"next-scale prediction needs a 'scales' layout (multi-scale residual tokenizers), "
                             f"got {layout.arrangement!r}; use arch 'gpt'")
        if code_dim is None:
            raise ValueError("next-scale prediction needs the tokenizer's code_dim (its next_scale_inputs width)")
        return NextScaleGPT(layout.vocab_size, layout.scale_shapes(), code_dim, num_classes, **options)
    raise ValueError(f"unknown generator arch {arch!r}; expected one of {', '.join(ARCHS)}")


def rebuild(arch: str, config: dict) -> nn.Module:
    """A generator from its saved ``config`` (the constructor's arguments)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown generator arch {arch!r}; expected one of {', '.join(ARCHS)}")
    options = dict(config)
    if arch in ("gpt", "mar") and options.get("grid"):
        options["grid"] = tuple(options["grid"])
    if arch == "next_scale":
        options["scale_shapes"] = [tuple(s) for s in options["scale_shapes"]]
    return ARCHS[arch](**options)
