"""Pieces every learned family shares: variant lookup and the [-1, 1] model range."""
from __future__ import annotations

from typing import Any, Callable

import torch


def to_model_range(x_B3HW: torch.Tensor) -> torch.Tensor:
    """API images in [0, 1] -> the [-1, 1] range the conv families work in."""
    return x_B3HW * 2 - 1


def from_model_range(y_B3HW: torch.Tensor) -> torch.Tensor:
    return (y_B3HW + 1) / 2


def variant_factory(cls: type, variants: dict[str, dict[str, Any]], doc: str) -> Callable[..., Any]:
    """A registry factory ``build(size="tiny", **overrides)`` over named option sets.

    The tokenizer's ``config`` holds the fully resolved options, so a checkpoint rebuilds
    the same model even if a named variant changes later.
    """

    def build(size: str = "tiny", **overrides: Any):
        if size not in variants:
            raise ValueError(f"unknown size {size!r} for {cls.family}; choose one of {sorted(variants)}")
        options = {**variants[size], **overrides}
        return cls(**options)

    build.variants = {name: {"size": name} for name in variants}
    build.__doc__ = doc
    return build
