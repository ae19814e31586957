"""Tokens <-> the 1D sequence an AR prior models, in the order the layout implies.

* ``grid``     -- raster order (row by row), as LlamaGen's GPT;
* ``scales``   -- coarse to fine, scale by scale, each map in raster order (VAR's order;
                  modelled here token by token rather than one scale at a time);
* ``sequence`` -- the 1D tokens as they are (TiTok/Hita: the first tokens are the coarsest).

Continuous tokens and codec byte streams have no fixed discrete sequence to model.
"""
from __future__ import annotations

import torch

from tokbench.tokens import Tokens, TokenLayout

ORDERS = {"grid": "raster", "scales": "coarse-to-fine scales, raster within a scale", "sequence": "1D token order"}
MAX_VOCAB = 2 ** 31  # token datasets store ids as int32; the prior embeds every id


def generation_order(layout: TokenLayout) -> str:
    """The order an AR prior generates ``layout``'s tokens in; a clear error where there is none."""
    if layout.kind != "discrete":
        raise ValueError("the AR prior models discrete tokens; this tokenizer's tokens are continuous latents")
    if layout.arrangement not in ORDERS:
        raise ValueError(f"the AR prior has no generation order for a {layout.arrangement!r} layout "
                         f"(codec byte streams vary in length); expected one of {', '.join(ORDERS)}")
    if int(layout.vocab_size) > MAX_VOCAB:  # type: ignore[arg-type]
        raise ValueError(f"the AR prior embeds every id and token datasets store them as int32: a vocabulary of "
                         f"{int(layout.vocab_size):,} ids is more than 2**31; tokens of 32 or more bits each "
                         f"(Infinity's) need a bitwise prior")
    return ORDERS[layout.arrangement]


def to_sequence(tokens: Tokens) -> torch.Tensor:
    """``(B, L)`` ids in generation order (every discrete layout already stores them so)."""
    generation_order(tokens.layout)
    return tokens.ids.reshape(tokens.batch_size, -1)


def from_sequence(seq_BL: torch.Tensor, layout: TokenLayout, image_size: tuple[int, int]) -> Tokens:
    """The inverse of `to_sequence`: ids in the layout's own shape, ready for ``decode``."""
    generation_order(layout)
    if seq_BL.dim() != 2 or seq_BL.shape[1] != layout.num_tokens:
        raise ValueError(f"expected (B, {layout.num_tokens}) ids for this layout, got {tuple(seq_BL.shape)}")
    shape = (seq_BL.shape[0], *layout.shape) if layout.arrangement == "grid" else tuple(seq_BL.shape)
    return Tokens(layout, image_size, ids=seq_BL.reshape(shape).long())


def latents_to_sequence(tokens: Tokens) -> torch.Tensor:
    """``(B, L, C)`` continuous tokens in raster order (grid latents ``(B, C, h, w)``; sequences as they are)."""
    if tokens.latents is None or tokens.layout.arrangement not in ("grid", "sequence"):
        raise ValueError("expected continuous latents in a 'grid' or 'sequence' layout")
    if tokens.layout.arrangement == "grid":
        return tokens.latents.flatten(2).transpose(1, 2)
    return tokens.latents


def latents_from_sequence(x_BLC: torch.Tensor, layout: TokenLayout, image_size: tuple[int, int]) -> Tokens:
    """The inverse of `latents_to_sequence`, ready for ``decode``."""
    if x_BLC.dim() != 3 or x_BLC.shape[1:] != (layout.num_tokens, layout.latent_channels):
        raise ValueError(f"expected (B, {layout.num_tokens}, {layout.latent_channels}) latents, got {tuple(x_BLC.shape)}")
    if layout.arrangement == "grid":
        h, w = layout.grid
        return Tokens(layout, image_size, latents=x_BLC.transpose(1, 2).reshape(-1, layout.latent_channels, h, w).float())
    return Tokens(layout, image_size, latents=x_BLC.float())
