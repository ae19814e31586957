"""MoVQ (Kandinsky 2.x's image autoencoder; diffusers ``VQModel`` with ``norm_type="spatial"``) as a
tokbench tokenizer: ``movq`` family.

The encoder is the taming/LDM `ConvEncoder`; codes are found by L2 nearest-code search (tokbench's
`VectorQuantizer`, codes as they are). The decoder is Emu3's 2D `SpatialDecoder`: every norm is
MoVQ's spatially conditioned GroupNorm, whose per-pixel scale and shift come from the quantized map
itself (not from ``post_quant_conv``'s output), which the ``vq`` family cannot express. Images go in
as ``2x - 1``; reconstructions come back as ``(y + 1) / 2`` (clipped to [0, 1] by `Tokenizer`).
Not trainable here: only the released weights are loaded.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tokbench.nn.conv import ConvEncoder, attention_levels, stride_of
from tokbench.nn.family import from_model_range, to_model_range
from tokbench.quantize import VectorQuantizer
from tokbench.tokenizer import Tokenizer
from tokbench.tokenizers.public.emu3_model import SpatialDecoder
from tokbench.tokens import TokenLayout, Tokens


class MoVQTokenizer(Tokenizer):
    """Images -> an ``h x w`` grid of code ids (``h = H / stride``); ``attn_levels``: levels
    (0 = full resolution) with attention after every ResNet block, on both sides."""

    family, kind = "movq", "discrete"

    def __init__(self, ch: int = 128, ch_mult: tuple[int, ...] = (1, 2, 2, 4), num_res_blocks: int = 2,
                 attn_levels: tuple[int, ...] = (3,), z_channels: int = 4, code_dim: int = 4,
                 codebook_size: int = 16384) -> None:
        super().__init__()
        ch_mult, attn_levels = tuple(int(m) for m in ch_mult), tuple(int(a) for a in attn_levels)
        self.config: dict[str, Any] = dict(ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks,
                                           attn_levels=list(attn_levels), z_channels=z_channels, code_dim=code_dim,
                                           codebook_size=codebook_size)
        self.stride = stride_of(ch_mult)
        self.encoder = ConvEncoder(ch, ch_mult, num_res_blocks, z_channels, attn_levels=attn_levels)
        self.quant_conv = nn.Conv2d(z_channels, code_dim, 1)
        self.quantize = VectorQuantizer(codebook_size, code_dim)
        self.post_quant_conv = nn.Conv2d(code_dim, z_channels, 1)
        self.decoder = SpatialDecoder(ch, ch_mult, num_res_blocks, z_channels, code_dim,
                                      attention_levels(len(ch_mult), False, attn_levels))

    def layout_for(self, height: int, width: int) -> TokenLayout:
        grid = (height // self.stride, width // self.stride)
        return TokenLayout("grid", grid, vocab_size=self.quantize.codebook_size)

    def features(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """Pre-quantization features ``(B, code_dim, h, w)``."""
        return self.quant_conv(self.encoder(to_model_range(x_B3HW)))

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        return Tokens(self.layout_for(*x_B3HW.shape[-2:]), ids=self.quantize(self.features(x_B3HW)).ids)

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        zq_BDhw = self.quantize.lookup(tokens.ids, channel_dim=1)
        return from_model_range(self.decoder(self.post_quant_conv(zq_BDhw), zq_BDhw))
