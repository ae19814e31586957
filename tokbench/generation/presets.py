"""Generator sizes and how a generator is built for a token dataset's layout.

| preset | layers x width, heads | reference |
|---|---|---|
| ``tiny`` | 2 x 64, 4 | CI: seconds on a CPU |
| ``B`` | 12 x 768, 12 | LlamaGen GPT-B (111M parameters with a 16,384-code tokenizer) |
| ``L`` | 24 x 1024, 16 | LlamaGen GPT-L (343M) |
| ``d16`` | 16 x 1024, 16 | VAR-d16 (310M; width = 64 x depth, heads = depth) |

``gpt`` (next token; raster order for grids -- 2D RoPE -- and 1D order for sequences and,
as the raster baseline, for scale maps) or ``next_scale`` (VAR's next-scale prediction;
``scales`` layouts only, needs the tokenizer's ``code_dim``).
"""
from __future__ import annotations

from torch import nn

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
ARCHS = {"gpt": TokenGPT, "next_scale": NextScaleGPT}


def preset_options(preset: str, **overrides) -> dict:
    if preset not in PRESETS:
        raise ValueError(f"unknown generator preset {preset!r}; expected one of {', '.join(PRESETS)}")
    return {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}


def build_generator(arch: str, layout: TokenLayout, num_classes: int, preset: str = "tiny",
                    code_dim: int | None = None, **overrides) -> nn.Module:
    """A generator of ``arch`` and ``preset`` size for tokens of ``layout`` (``num_classes`` 0:
    unconditional)."""
    generation_order(layout)  # clear error for continuous or codec tokens
    options = preset_options(preset, **overrides)
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
    if arch == "gpt" and options.get("grid"):
        options["grid"] = tuple(options["grid"])
    if arch == "next_scale":
        options["scale_shapes"] = [tuple(s) for s in options["scale_shapes"]]
    return ARCHS[arch](**options)
