"""Emu3's vision tokenizer (baaivision/Emu3, ``Emu3VisionVQModel``) as a tokbench tokenizer: ``emu3`` family.

A video MoVQGAN that tokbench's ``vq`` family cannot express: after the per-frame 2D encoder
(the taming/LDM `ConvEncoder`) come temporal layers -- causal 3D convs that halve the frame count
and temporal ResNet blocks with BatchNorm3d -- and a causal ``quant_conv``; the codes are found by
L2 nearest-code search (tokbench's `VectorQuantizer`). The decoder mirrors the temporal part
(frames doubled by nearest repetition, then a causal 3D conv) and ends in a 2D decoder whose every
norm is MoVQ's spatially conditioned GroupNorm: the quantized map, passed through the same
temporal stack, gives each pixel a scale and a shift.

A still image is what upstream's ``encode`` makes of a 4D input: a clip of
``temporal_downsample_factor`` copies of the frame, which the temporal downsampling turns into one
latent frame of ``h x w`` codes; ``decode`` returns the first frame of the decoded clip. The 2D
encoder is run once per image (its frames are identical) and the 2D decoder on the first frame
only (the others are discarded), which gives upstream's numbers at a quarter of the cost.
Images go in as ``2x - 1``; reconstructions come back as ``(y + 1) / 2`` clipped to [0, 1] (upstream's
``postprocess`` clips ``y`` to [-1, 1]).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tokbench.nn.conv import AttnBlock, ConvEncoder, ResnetBlock, Upsample, attention_levels, group_norm, stride_of
from tokbench.nn.family import from_model_range, to_model_range
from tokbench.quantize import VectorQuantizer
from tokbench.tokenizer import Tokenizer
from tokbench.tokens import TokenLayout, Tokens

# Upstream's causal convs pad two frames in front and none behind, whatever their kernel.
FRONT_FRAMES = 2


class CausalConv3d(nn.Module):
    """Conv3d over ``(B, C, T, h, w)``: causal in time (two zero frames in front), "same" in space."""

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int, int] = (3, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1)) -> None:
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, kernel, stride)
        pad: list[int] = []
        for k, s in reversed(list(zip(kernel[1:], stride[1:]))):  # F.pad lists the last dim (w) first
            pad += [k - s - (k - s) // 2, (k - s) // 2]
        self.padding = (*pad, FRONT_FRAMES, 0)

    def forward(self, x_BCThw: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x_BCThw, self.padding))


class TemporalResBlock(nn.Module):
    """``x + conv(silu(bn(conv(silu(bn(x))))))`` with causal 3x3x3 convs (the width never changes)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm3d(ch), CausalConv3d(ch, ch, (3, 3, 3))
        self.norm2, self.conv2 = nn.BatchNorm3d(ch), CausalConv3d(ch, ch, (3, 3, 3))

    def forward(self, x_BCThw: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x_BCThw)))
        return x_BCThw + self.conv2(F.silu(self.norm2(h)))


class TemporalUpsample(nn.Module):
    """Frames doubled by nearest repetition, then a causal 3x3x3 conv."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = CausalConv3d(ch, ch, (3, 3, 3))

    def forward(self, x_BCThw: torch.Tensor) -> torch.Tensor:
        return self.conv(x_BCThw.repeat_interleave(2, dim=2))


class TemporalEncoder(nn.Module):
    """``(B, C, T, h, w) -> (B, C, T / factor, h, w)``: stride-2 causal convs (4x3x3), each followed by
    SiLU, then ResNet blocks."""

    def __init__(self, ch: int, factor: int, num_res_blocks: int) -> None:
        super().__init__()
        self.down = nn.ModuleList(CausalConv3d(ch, ch, (4, 3, 3), (2, 1, 1)) for _ in range(int(math.log2(factor))))
        self.res = nn.Sequential(*(TemporalResBlock(ch) for _ in range(num_res_blocks)))

    def forward(self, x_BCThw: torch.Tensor) -> torch.Tensor:
        for conv in self.down:
            x_BCThw = F.silu(conv(x_BCThw))
        return self.res(x_BCThw)


class TemporalDecoder(nn.Module):
    """``(B, C, t, h, w) -> (B, C, t * factor, h, w)``: ResNet blocks, then upsamplings each followed by SiLU."""

    def __init__(self, ch: int, factor: int, num_res_blocks: int) -> None:
        super().__init__()
        self.res = nn.Sequential(*(TemporalResBlock(ch) for _ in range(num_res_blocks)))
        self.up = nn.ModuleList(TemporalUpsample(ch) for _ in range(int(math.log2(factor))))

    def forward(self, x_BCThw: torch.Tensor) -> torch.Tensor:
        x_BCThw = self.res(x_BCThw)
        for up in self.up:
            x_BCThw = F.silu(up(x_BCThw))
        return x_BCThw


class SpatialNorm(nn.Module):
    """MoVQ's norm: GroupNorm of the features, times a scale plus a shift computed per pixel (1x1
    convs) from the quantized map, nearest-upsampled to the features' size."""

    def __init__(self, ch: int, zq_ch: int) -> None:
        super().__init__()
        self.norm = group_norm(ch)
        self.to_scale, self.to_shift = nn.Conv2d(zq_ch, ch, 1), nn.Conv2d(zq_ch, ch, 1)

    def forward(self, x_BChw: torch.Tensor, zq_BDhw: torch.Tensor) -> torch.Tensor:
        zq_BDhw = F.interpolate(zq_BDhw, size=x_BChw.shape[-2:], mode="nearest")
        return self.norm(x_BChw) * self.to_scale(zq_BDhw) + self.to_shift(zq_BDhw)


class SpatialResnetBlock(ResnetBlock):
    """`ResnetBlock` whose two norms are `SpatialNorm`\\ s."""

    def __init__(self, in_ch: int, out_ch: int, zq_ch: int) -> None:
        super().__init__(in_ch, out_ch)
        self.norm1, self.norm2 = SpatialNorm(in_ch, zq_ch), SpatialNorm(out_ch, zq_ch)

    def forward(self, x_BChw: torch.Tensor, zq_BDhw: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x_BChw, zq_BDhw)))
        h = self.conv2(F.silu(self.norm2(h, zq_BDhw)))
        return self.skip(x_BChw) + h


class SpatialAttnBlock(AttnBlock):
    """`AttnBlock` whose norm is a `SpatialNorm`."""

    def __init__(self, ch: int, zq_ch: int) -> None:
        super().__init__(ch)
        self.norm = SpatialNorm(ch, zq_ch)

    def forward(self, x_BChw: torch.Tensor, zq_BDhw: torch.Tensor) -> torch.Tensor:
        return x_BChw + self.attend(self.norm(x_BChw, zq_BDhw))


class SpatialDecoder(nn.Module):
    """MoVQ's decoder: `ConvDecoder`'s plan and module names (``mid.{0,1,2}``, ``up.{n}`` in execution
    order), every norm conditioned on the quantized map ``zq``."""

    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, z_channels: int, zq_channels: int,
                 attn_levels: set[int]) -> None:
        super().__init__()
        c = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, c, 3, padding=1)
        self.mid = nn.ModuleList([SpatialResnetBlock(c, c, zq_channels), SpatialAttnBlock(c, zq_channels),
                                  SpatialResnetBlock(c, c, zq_channels)])
        blocks: list[nn.Module] = []
        for level, mult in reversed(list(enumerate(ch_mult))):
            for _ in range(num_res_blocks + 1):
                blocks.append(SpatialResnetBlock(c, ch * mult, zq_channels))
                c = ch * mult
                if level in attn_levels:
                    blocks.append(SpatialAttnBlock(c, zq_channels))
            if level > 0:
                blocks.append(Upsample(c))
        self.up = nn.ModuleList(blocks)
        self.norm_out, self.conv_out = SpatialNorm(c, zq_channels), nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, z_BChw: torch.Tensor, zq_BDhw: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z_BChw)
        for block in (*self.mid, *self.up):
            h = block(h) if isinstance(block, Upsample) else block(h, zq_BDhw)
        return self.conv_out(F.silu(self.norm_out(h, zq_BDhw)))


class Emu3Tokenizer(Tokenizer):
    """Images -> an ``h x w`` grid of code ids (``h = H / stride``), each image as a still clip.

    Options are upstream's config's (``attn_levels`` = its ``attn_resolutions``, which are level
    indices); the defaults are the release's (``BAAI/Emu3-VisionTokenizer``). Not trainable here:
    upstream's training code is not public.
    """

    family, kind = "emu3", "discrete"

    def __init__(self, ch: int = 256, ch_mult: tuple[int, ...] = (1, 2, 2, 4), num_res_blocks: int = 2,
                 attn_levels: tuple[int, ...] = (3,), z_channels: int = 4, embed_dim: int = 4,
                 codebook_size: int = 32768, temporal_downsample_factor: int = 4) -> None:
        super().__init__()
        ch_mult, attn_levels = tuple(int(m) for m in ch_mult), tuple(int(a) for a in attn_levels)
        factor = int(temporal_downsample_factor)
        if factor < 1 or factor & (factor - 1):
            raise ValueError(f"emu3: temporal_downsample_factor must be a power of 2, got {temporal_downsample_factor}")
        if embed_dim != z_channels:  # the decoder's temporal stack runs over both maps
            raise ValueError(f"emu3: embed_dim must equal z_channels, got {embed_dim} and {z_channels}")
        levels = attention_levels(len(ch_mult), False, attn_levels)
        self.config: dict[str, Any] = dict(
            ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks, attn_levels=list(attn_levels),
            z_channels=z_channels, embed_dim=embed_dim, codebook_size=codebook_size,
            temporal_downsample_factor=factor)
        self.stride, self.frames = stride_of(ch_mult), factor
        self.encoder = ConvEncoder(ch, ch_mult, num_res_blocks, z_channels, attn_levels=attn_levels)
        self.encoder_time = TemporalEncoder(z_channels, factor, num_res_blocks)
        self.quant_conv = CausalConv3d(z_channels, embed_dim)
        self.quantize = VectorQuantizer(codebook_size, embed_dim)
        self.post_quant_conv = CausalConv3d(embed_dim, z_channels)
        self.decoder_time = TemporalDecoder(z_channels, factor, num_res_blocks)
        self.decoder = SpatialDecoder(ch, ch_mult, num_res_blocks, z_channels, embed_dim, levels)

    def layout_for(self, height: int, width: int) -> TokenLayout:
        grid = (height // self.stride, width // self.stride)
        return TokenLayout("grid", grid, vocab_size=self.quantize.codebook_size)

    def features(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """Pre-quantization features ``(B, embed_dim, h, w)``: the latent frame of the still clip."""
        z_BChw = self.encoder(to_model_range(x_B3HW))
        clip_BCThw = z_BChw.unsqueeze(2).expand(-1, -1, self.frames, -1, -1)
        return self.quant_conv(self.encoder_time(clip_BCThw))[:, :, 0]

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        idx_Bhw = self.quantize(self.features(x_B3HW)).ids
        return Tokens(self.layout_for(*x_B3HW.shape[-2:]), ids=idx_Bhw)

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        zq_BD1hw = self.quantize.lookup(tokens.ids, channel_dim=1).unsqueeze(2)
        # One temporal stack serves the latents and the conditioning map (as upstream, batched).
        clips = self.decoder_time(torch.cat([self.post_quant_conv(zq_BD1hw), zq_BD1hw]))
        z_BChw, zq_BDhw = clips[:, :, 0].chunk(2)  # the first decoded frame is the image
        return from_model_range(self.decoder(z_BChw, zq_BDhw))  # `decode` clips to [0, 1]
