"""Rotary position embeddings (RoPE): 1D for token sequences, 2D (axial) for token grids.

A position is a set of rotation angles, one per pair of channels of an attention head.
1D: angle ``t * theta_i`` for the ``Dh/2`` pairs. 2D (as LlamaGen): the first half of the
pairs rotates with the row, the second half with the column, each with ``Dh/4``
frequencies. The class prefix of the AR generator sits at angle 0 (no rotation).
"""
from __future__ import annotations

import torch


def frequencies(num_pairs: int, base: float = 10_000.0) -> torch.Tensor:
    """``theta_i = base^(-i / num_pairs)``, ``i = 0 .. num_pairs-1``."""
    return base ** (-torch.arange(num_pairs, dtype=torch.float64) / num_pairs)


def angles_1d(num_positions: int, head_dim: int, base: float = 10_000.0) -> torch.Tensor:
    """``(num_positions, head_dim/2)`` angles of positions ``0 .. num_positions-1``."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head width, got {head_dim}")
    t = torch.arange(num_positions, dtype=torch.float64)
    return torch.outer(t, frequencies(head_dim // 2, base)).float()


def angles_2d(grid: tuple[int, int], head_dim: int, base: float = 10_000.0) -> torch.Tensor:
    """``(h*w, head_dim/2)`` angles of the cells of an ``h x w`` grid in raster order."""
    if head_dim % 4:
        raise ValueError(f"2D RoPE needs a head width divisible by 4, got {head_dim}")
    h, w = grid
    freqs = frequencies(head_dim // 4, base)
    rows = torch.arange(h, dtype=torch.float64).repeat_interleave(w)
    cols = torch.arange(w, dtype=torch.float64).repeat(h)
    return torch.cat([torch.outer(rows, freqs), torch.outer(cols, freqs)], dim=1).float()


def with_prefix(angles_LP: torch.Tensor, prefix: int) -> torch.Tensor:
    """Prepend ``prefix`` unrotated positions (the class token)."""
    return torch.cat([angles_LP.new_zeros(prefix, angles_LP.shape[1]), angles_LP])


def apply_rope(x_BHLD: torch.Tensor, angles_LP: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(2i, 2i+1)`` of ``x`` by ``angles[l, i]`` at position ``l``."""
    cos, sin = angles_LP.cos().to(x_BHLD.dtype), angles_LP.sin().to(x_BHLD.dtype)
    x1, x2 = x_BHLD[..., 0::2], x_BHLD[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
