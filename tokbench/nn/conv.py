"""Convolutional encoder/decoder shared by the VQ, residual-scale and VAE families.

The VQGAN / LlamaGen / Stable-Diffusion autoencoder shape: ResNet blocks with GroupNorm
and SiLU, ``len(ch_mult) - 1`` stride-2 downsamplings, self-attention in the middle at the
lowest resolution (and, optionally, after every ResNet block of the lowest level, as in
LlamaGen's VQ, or of any chosen levels, as taming's ``attn_resolutions``). One
implementation, three families.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (fewer when ``channels`` is not a multiple of 32, as in tiny configs)."""
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """``x + conv(silu(norm(conv(silu(norm(x))))))``, with a 1x1 skip projection when the width changes."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = group_norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2, self.conv2 = group_norm(out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x_BChw)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x_BChw) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions (fused SDPA)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm, self.qkv, self.proj = group_norm(ch), nn.Conv2d(ch, 3 * ch, 1), nn.Conv2d(ch, ch, 1)

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        return x_BChw + self.attend(self.norm(x_BChw))

    def attend(self, h_BChw: torch.Tensor) -> torch.Tensor:
        """The attention's output on already-normalized features (the residual branch)."""
        B, C, h, w = h_BChw.shape
        q, k, v = self.qkv(h_BChw).reshape(B, 3, C, h * w).transpose(-1, -2).unbind(1)
        out_BLC = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
        return self.proj(out_BLC.transpose(-1, -2).reshape(B, C, h, w))


class Downsample(nn.Module):
    """Stride-2 3x3 conv: ``(B, C, H, W) -> (B, C, H/2, W/2)``."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x_BChw, (0, 1, 0, 1)))  # asymmetric pad: exact halving


class Upsample(nn.Module):
    """Nearest 2x upsampling then a 3x3 conv: ``(B, C, h, w) -> (B, C, 2h, 2w)``."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x_BChw, scale_factor=2.0, mode="nearest"))


def attention_levels(num_levels: int, lowest_level_attn: bool, attn_levels: tuple[int, ...] | None) -> set[int]:
    """Levels (0 = full resolution) whose ResNet blocks are each followed by attention.

    ``attn_levels`` wins when given (taming/LDM's ``attn_resolutions`` turned into level
    indices); otherwise only the lowest level, and only if ``lowest_level_attn``.
    """
    if attn_levels is not None:
        levels = {int(level) for level in attn_levels}
        if any(not 0 <= level < num_levels for level in levels):
            raise ValueError(f"attn_levels must lie in 0..{num_levels - 1}, got {sorted(levels)}")
        return levels
    return {num_levels - 1} if lowest_level_attn else set()


def _mid(ch: int, attn: bool) -> nn.Sequential:
    return nn.Sequential(ResnetBlock(ch, ch), AttnBlock(ch) if attn else nn.Identity(), ResnetBlock(ch, ch))


def resampled_level_count(num_levels: int, resampled_levels: int | None) -> int:
    """How many levels end with a 2x resampling: ``num_levels - 1`` unless given (Cosmos's
    tokenizers resample fewer or more times than they have levels less one)."""
    if resampled_levels is None:
        return num_levels - 1
    if not 0 <= resampled_levels <= num_levels:
        raise ValueError(f"resampled_levels must lie in 0..{num_levels}, got {resampled_levels}")
    return int(resampled_levels)


class ConvEncoder(nn.Module):
    """Image ``(B, 3, H, W)`` -> features ``(B, out_channels, H/s, W/s)``, ``s = 2**(len(ch_mult)-1)``.

    ``resampled_levels``: the first that many levels end with a downsampling (default all but the last).
    """

    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, out_channels: int,
                 in_channels: int = 3, mid_attn: bool = True, lowest_level_attn: bool = False,
                 attn_levels: tuple[int, ...] | None = None, resampled_levels: int | None = None) -> None:
        super().__init__()
        with_attn = attention_levels(len(ch_mult), lowest_level_attn, attn_levels)
        downsampled = resampled_level_count(len(ch_mult), resampled_levels)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        blocks, c = [], ch
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(c, ch * mult))
                c = ch * mult
                if level in with_attn:
                    blocks.append(AttnBlock(c))
            if level < downsampled:
                blocks.append(Downsample(c))
        self.down = nn.Sequential(*blocks)
        self.mid = _mid(c, mid_attn)
        self.norm_out, self.conv_out = group_norm(c), nn.Conv2d(c, out_channels, 3, padding=1)

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.down(self.conv_in(x_B3HW)))
        return self.conv_out(F.silu(self.norm_out(h)))


class ConvDecoder(nn.Module):
    """Features ``(B, in_channels, h, w)`` -> image ``(B, 3, h*s, w*s)`` (the encoder's mirror).

    ``resampled_levels``: the last that many levels (the first to run) end with an upsampling.
    """

    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, in_channels: int,
                 out_channels: int = 3, mid_attn: bool = True, lowest_level_attn: bool = False,
                 attn_levels: tuple[int, ...] | None = None, resampled_levels: int | None = None) -> None:
        super().__init__()
        with_attn = attention_levels(len(ch_mult), lowest_level_attn, attn_levels)
        first_upsampled = len(ch_mult) - resampled_level_count(len(ch_mult), resampled_levels)
        c = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(in_channels, c, 3, padding=1)
        self.mid = _mid(c, mid_attn)
        blocks = []
        for level, mult in reversed(list(enumerate(ch_mult))):
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(c, ch * mult))
                c = ch * mult
                if level in with_attn:
                    blocks.append(AttnBlock(c))
            if level >= first_upsampled:
                blocks.append(Upsample(c))
        self.up = nn.Sequential(*blocks)
        self.norm_out, self.conv_out = group_norm(c), nn.Conv2d(c, out_channels, 3, padding=1)

    def forward(self, z_BChw: torch.Tensor) -> torch.Tensor:
        h = self.up(self.mid(self.conv_in(z_BChw)))
        return self.conv_out(F.silu(self.norm_out(h)))


def stride_of(ch_mult: tuple[int, ...]) -> int:
    """Downsampling factor of a `ConvEncoder` with these channel multipliers."""
    return 2 ** (len(ch_mult) - 1)
