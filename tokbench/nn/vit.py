"""Transformer pieces: blocks (bidirectional for the 1D family's ViTs, causal for the AR prior),
patchify, resizable positions."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """Pre-norm transformer block with fused attention (``F.scaled_dot_product_attention``);
    ``causal`` masks each position to itself and the ones before it."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, causal: bool = False) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.norm1, self.qkv, self.proj = nn.LayerNorm(width), nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        B, L, C = x_BLC.shape
        q, k, v = self.qkv(self.norm1(x_BLC)).view(B, L, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        attn_BLC = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal).transpose(1, 2).reshape(B, L, C)
        x_BLC = x_BLC + self.proj(attn_BLC)
        return x_BLC + self.mlp(self.norm2(x_BLC))


class Transformer(nn.Module):
    def __init__(self, width: int, depth: int, heads: int, causal: bool = False) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(Block(width, heads, causal=causal) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(x_BLC))


class GridPositions(nn.Module):
    """Learned 2D positions for a ``base x base`` patch grid, resized (bicubic) for other grids."""

    def __init__(self, base: int, width: int) -> None:
        super().__init__()
        self.base = base
        self.pos_1Chw = nn.Parameter(torch.randn(1, width, base, base) * 0.02)

    def forward(self, h: int, w: int) -> torch.Tensor:
        pos = self.pos_1Chw
        if (h, w) != (self.base, self.base):
            pos = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False)
        return pos.flatten(2).transpose(1, 2)  # (1, h*w, C)


def patchify(x_B3HW: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, 3, H, W)`` -> ``(B, H/p * W/p, 3*p*p)``."""
    B, C, H, W = x_B3HW.shape
    return x_B3HW.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(B, (H // p) * (W // p), C * p * p)


def unpatchify(x_BLD: torch.Tensor, p: int, h: int, w: int) -> torch.Tensor:
    """Inverse of `patchify` for a ``h x w`` patch grid."""
    B = x_BLD.shape[0]
    return x_BLD.reshape(B, h, w, 3, p, p).permute(0, 3, 1, 4, 2, 5).reshape(B, 3, h * p, w * p)
