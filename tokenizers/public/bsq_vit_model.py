"""BSQ-ViT (zhaoyue-zephyrus/bsq-vit, ``VITBSQModel``): a tokbench `Tokenizer` of its own.

Encode: the image (in ``[-1, 1]``, or as it is in ``[0, 1]`` for a model trained without
``zero_mean``) cut into ``p x p`` patches (each flattened channel-major,
``(c, row, col)``), a bias-free linear embedding, learned positions, ``ln_pre``, pre-norm ViT
blocks, ``ln_post``; ``quant_embed`` projects each patch to ``bits`` channels, which tokbench's
`BinarySphericalQuantizer` l2-normalises and rounds to ``sign / sqrt(bits)``. Decode: the codes
through ``post_quant_embed``, learned positions, ``ln_pre``, blocks, ``ln_post``, ``ffn``
(linear + tanh), ``conv_out`` to each patch's pixels; clamped to the input range.

**Id layout.** BSQ-ViT's id is ``sum_c bit_c * 2**(bits-1-c)``: its channel 0 is the *most*
significant bit (bit ``c`` is 1 where channel ``c`` is positive). tokbench's binary quantizers
put channel 0 at the least significant bit, so the channels are reversed between
``quant_embed`` and the quantizer (and back before ``post_quant_embed``): the ids are then
upstream's, bit for bit, and the weights stay upstream's tensors under upstream's names.

The positions are learned for one grid, so images must be ``image_size`` square (after the
padding to a multiple of the patch size).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tokbench.nn.family import from_model_range, to_model_range
from tokbench.nn.vit import patchify, unpatchify
from tokbench.quantize import BinarySphericalQuantizer
from tokbench.tokenizer import AutoencoderOutput, Tokenizer
from tokbench.tokens import TokenLayout, Tokens
from tokbench.tokenizers.public.titok_model import ViTBlock


class Blocks(nn.Module):
    """``resblocks``: the pre-norm blocks, under upstream's ``transformer.resblocks.N`` names."""

    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ViTBlock(width, heads, mlp_ratio) for _ in range(depth))

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x_BLC = block(x_BLC)
        return x_BLC


def _positions(grid: int, width: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(grid * grid, width) * 0.02)


class ViTEncoder(nn.Module):
    """Images ``(B, 3, H, W)`` in the model's range -> patch features ``(B, L, width)``."""

    def __init__(self, grid: int, patch_size: int, width: int, depth: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.conv1 = nn.Linear(3 * patch_size * patch_size, width, bias=False)  # bias-free under ln_pre
        self.positional_embedding = _positions(grid, width)
        self.ln_pre, self.ln_post = nn.LayerNorm(width), nn.LayerNorm(width)
        self.transformer = Blocks(width, depth, heads, mlp_ratio)

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        x_BLC = self.conv1(patchify(x_B3HW, self.patch_size)) + self.positional_embedding
        return self.ln_post(self.transformer(self.ln_pre(x_BLC)))


class ViTDecoder(nn.Module):
    """Patch features ``(B, L, width)`` -> images ``(B, 3, H, W)`` (unclamped, in the model's range)."""

    def __init__(self, grid: int, patch_size: int, width: int, depth: int, heads: int, mlp_ratio: float,
                 ffn_dim: int) -> None:
        super().__init__()
        self.grid, self.patch_size = grid, patch_size
        self.positional_embedding = _positions(grid, width)
        self.ln_pre, self.ln_post = nn.LayerNorm(width), nn.LayerNorm(width)
        self.transformer = Blocks(width, depth, heads, mlp_ratio)
        self.ffn = nn.Sequential(nn.Linear(width, ffn_dim), nn.Tanh())
        self.conv_out = nn.Linear(ffn_dim, 3 * patch_size * patch_size)

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        x_BLC = self.ln_post(self.transformer(self.ln_pre(x_BLC + self.positional_embedding)))
        return unpatchify(self.conv_out(self.ffn(x_BLC)), self.patch_size, self.grid, self.grid)


class BSQViTTokenizer(Tokenizer):
    """BSQ-ViT: ``image_size`` px images -> a ``g x g`` grid (``g = image_size / patch_size``) of
    ``bits``-bit ids in BSQ-ViT's layout (see the module docstring). ``zero_mean``: the model works
    on ``[-1, 1]`` images (upstream's ``data.zero_mean``, set in every released config), else on
    ``[0, 1]``. Trainable with BSQ's losses at the release's settings (no commitment loss, the
    entropy terms weighted 0.1 overall)."""

    family, kind = "bsq_vit", "discrete"

    def __init__(self, image_size: int = 256, patch_size: int = 8, width: int = 768, depth: int = 12, heads: int = 12,
                 mlp_ratio: float = 4.0, bits: int = 18, ffn_dim: int = 3072, zero_mean: bool = True) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"BSQ-ViT: image_size={image_size} must be a multiple of patch_size={patch_size}")
        if width % heads:
            raise ValueError(f"BSQ-ViT: width={width} must be a multiple of heads={heads}")
        self.config: dict[str, Any] = dict(image_size=image_size, patch_size=patch_size, width=width, depth=depth,
                                           heads=heads, mlp_ratio=mlp_ratio, bits=bits, ffn_dim=ffn_dim,
                                           zero_mean=zero_mean)
        self.stride, self.image_size, self.zero_mean = patch_size, image_size, zero_mean
        grid = image_size // patch_size
        self.encoder = ViTEncoder(grid, patch_size, width, depth, heads, mlp_ratio)
        self.quant_embed = nn.Linear(width, bits)
        self.quantize = BinarySphericalQuantizer(bits, beta=0.0)
        self.post_quant_embed = nn.Linear(bits, width)
        self.decoder = ViTDecoder(grid, patch_size, width, depth, heads, mlp_ratio, ffn_dim)

    def layout_for(self, height: int, width: int) -> TokenLayout:
        return TokenLayout("grid", (height // self.stride, width // self.stride), vocab_size=self.quantize.codebook_size)

    def _check_size(self, h: int, w: int) -> None:
        if (h, w) != (self.image_size, self.image_size):
            raise ValueError(f"BSQ-ViT works on {self.image_size}x{self.image_size} images only (its positions are "
                             f"learned for that grid); got {h}x{w}: resize or crop first")

    def features(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """``(B, L, bits)`` pre-quantization features in the quantizer's channel order (reversed)."""
        self._check_size(*x_B3HW.shape[-2:])
        return self.quant_embed(self.encoder(self.to_model(x_B3HW))).flip(-1)

    def to_model(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        return to_model_range(x_B3HW) if self.zero_mean else x_B3HW

    def from_model(self, y_B3HW: torch.Tensor) -> torch.Tensor:
        return from_model_range(y_B3HW) if self.zero_mean else y_B3HW

    def decode_codes(self, codes_BLD: torch.Tensor) -> torch.Tensor:
        """Codes in the quantizer's channel order -> images in ``[0, 1]`` (clamped as upstream)."""
        y_B3HW = self.decoder(self.post_quant_embed(codes_BLD.flip(-1)))
        return self.from_model(y_B3HW.clamp(-1 if self.zero_mean else 0, 1))

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        layout = self.layout_for(*x_B3HW.shape[-2:])
        idx_BL = self.quantize(self.features(x_B3HW), channel_dim=-1).ids
        return Tokens(layout, ids=idx_BL.reshape(-1, *layout.grid))

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        if tokens.image_size is not None:  # unset on tokens straight from encode_padded, which checked it
            self._check_size(*(-(-s // self.stride) * self.stride for s in tokens.image_size))
        g = self.image_size // self.stride
        if tuple(tokens.ids.shape[1:]) != (g, g):
            raise ValueError(f"BSQ-ViT decodes a {g}x{g} grid of ids per image, got ids of shape {tuple(tokens.ids.shape)}")
        idx_BL = tokens.ids.flatten(1)
        return self.decode_codes(self.quantize.lookup(idx_BL, channel_dim=-1))

    def autoencode(self, x_B3HW: torch.Tensor) -> AutoencoderOutput:
        q = self.quantize(self.features(x_B3HW), channel_dim=-1)
        y = self.from_model(self.decoder(self.post_quant_embed(q.z_q.flip(-1))))
        return AutoencoderOutput(y, q.losses, q.stats)

    def last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight
