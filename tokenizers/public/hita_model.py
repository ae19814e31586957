"""Hita (CVMI-Lab/Hita, "Holistic Tokenizer for Autoregressive Image Generation"): a tokbench
`Tokenizer` of its own.

Encode: LlamaGen's conv encoder turns the image into a ``g x g`` map of ``dim`` features
(``g = image_size / stride``); a frozen DINOv2 ViT (with registers) sees the same image resized to
224 px. A transformer runs over ``[K learned holistic tokens | DINO's class + patch tokens | the
conv features + positions]`` with full attention; a second one, causal, over ``[holistic | conv
features]`` alone. The holistic tokens go through ``pre_slots_quant`` to ``slot_code_dim`` and the
patch features through ``quant_conv`` to ``code_dim``; each is matched, l2-normalized, to its own
l2-normalized codebook (tokbench's `VectorQuantizer`). Decode: both kinds of codes back to ``dim``,
``[holistic + positions | patches + positions]`` through a causal transformer, and the outputs at
positions ``K - shift_k ... K - shift_k + g*g - 1`` (shifted ``shift_k`` places left, as released)
form the map LlamaGen's conv decoder turns into the image.

Token layout: one ``sequence`` of ``K + g*g`` ids, in the order Hita's AR models generate them
(``autoregressive/models/gpt.py``: slots first): the ``K`` holistic ids (``slot_quantize``'s
codebook), then the ``g*g`` patch ids (``quantize``'s codebook) in raster order. The two codebooks
are different tables of the same size, so one vocabulary size describes both halves.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2.functional import gaussian_blur

from tokbench.nn.conv import ConvDecoder, ConvEncoder, stride_of
from tokbench.nn.family import from_model_range, to_model_range
from tokbench.quantize import VectorQuantizer
from tokbench.tokenizer import Tokenizer
from tokbench.tokens import TokenLayout, Tokens

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def resize_antialiased(x_BCHW: torch.Tensor, size: int) -> torch.Tensor:
    """``kornia.geometry.resize(x, (size, size), "bicubic", align_corners=True, antialias=True)``:
    where a side shrinks by ``f > 1``, a Gaussian blur (sigma ``(f - 1) / 2``, odd kernel
    ``max(4 sigma, 3)``, reflected borders) first; then bicubic interpolation, corners aligned."""
    H, W = x_BCHW.shape[-2:]
    factors = (H / size, W / size)
    if max(factors) > 1:
        sigmas = [max((f - 1.0) / 2.0, 0.001) for f in factors]
        ks = [int(max(4.0 * s, 3)) for s in sigmas]
        ks = [k if k % 2 else k + 1 for k in ks]
        x_BCHW = gaussian_blur(x_BCHW, kernel_size=[ks[1], ks[0]], sigma=[sigmas[1], sigmas[0]])
    return F.interpolate(x_BCHW, size=(size, size), mode="bicubic", align_corners=True)


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class DinoBlock(nn.Module):
    """DINOv2 block: ``x + ls1(attn(norm1(x)))``, ``x + ls2(mlp(norm2(x)))``; fused qkv, GELU MLP."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv, self.attn.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
        self.ls1, self.ls2 = LayerScale(width), LayerScale(width)

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        B, L, C = x_BLC.shape
        q, k, v = self.attn.qkv(self.norm1(x_BLC)).view(B, L, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        a_BLC = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, L, C)
        x_BLC = x_BLC + self.ls1(self.attn.proj(a_BLC))
        return x_BLC + self.ls2(self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x_BLC)))))


class DinoV2(nn.Module):
    """DINOv2 ViT with register tokens (``dinov2_vitl14_reg`` at the release's sizes), frozen.

    Its positions are learned on a ``grid x grid`` map (518 px) and rescaled to the input's patch
    grid by bicubic, antialiased interpolation with the scale factor ``n / grid`` (DINOv2's own
    rule, offset 0). Returns the final-normed class and patch tokens (registers dropped).
    """

    def __init__(self, width: int, depth: int, heads: int, patch_size: int, grid: int, registers: int) -> None:
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, width, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, width))
        self.register_tokens = nn.Parameter(torch.zeros(1, registers, width))
        self.blocks = nn.ModuleList(DinoBlock(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.grid, self.patch_size, self.registers = grid, patch_size, registers

    def positions(self, n: int) -> torch.Tensor:
        pos = self.pos_embed.float()
        if n == self.grid:
            return pos
        C = pos.shape[-1]
        patch_1Cgg = pos[:, 1:].reshape(1, self.grid, self.grid, C).permute(0, 3, 1, 2)
        s = n / self.grid
        patch_1Cnn = F.interpolate(patch_1Cgg, scale_factor=(s, s), mode="bicubic", antialias=True)
        return torch.cat([pos[:, :1], patch_1Cnn.permute(0, 2, 3, 1).reshape(1, n * n, C)], dim=1)

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        B = x_B3HW.shape[0]
        patches_BLC = self.patch_embed.proj(x_B3HW).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(B, -1, -1), patches_BLC], dim=1)
        x = x + self.positions(x_B3HW.shape[-1] // self.patch_size).to(x.dtype)
        x = torch.cat([x[:, :1], self.register_tokens.expand(B, -1, -1), x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return torch.cat([x[:, :1], x[:, 1 + self.registers:]], dim=1)


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections (bias on them optional)."""

    def __init__(self, dim: int, heads: int, head_dim: int, qkv_bias: bool) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.q, self.k, self.v = (nn.Linear(dim, inner, bias=qkv_bias) for _ in range(3))
        self.out = nn.Linear(inner, dim)

    def forward(self, x_BLC: torch.Tensor, causal: bool) -> torch.Tensor:
        B, L, _ = x_BLC.shape
        q, k, v = (p(x_BLC).view(B, L, self.heads, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
        return self.out(F.scaled_dot_product_attention(q, k, v, is_causal=causal).transpose(1, 2).reshape(B, L, -1))


class SwiGLU(nn.Module):
    """``w3(silu(a) * b)`` with ``a, b = w12(x).chunk(2)``; hidden width ``2/3 mlp_dim`` rounded up to 8."""

    def __init__(self, dim: int, mlp_dim: int) -> None:
        super().__init__()
        hidden = (int(mlp_dim * 2 / 3) + 7) // 8 * 8
        self.w12, self.w3 = nn.Linear(dim, 2 * hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class Layer(nn.Module):
    """Pre-norm block ``x + attn1(norm1(x))``, ``x + ffnet(norm2(x))``."""

    def __init__(self, dim: int, heads: int, head_dim: int, mlp_dim: int, qkv_bias: bool) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim, qkv_bias)
        self.ffnet = SwiGLU(dim, mlp_dim)

    def forward(self, x_BLC: torch.Tensor, causal: bool) -> torch.Tensor:
        x_BLC = x_BLC + self.attn1(self.norm1(x_BLC), causal)
        return x_BLC + self.ffnet(self.norm2(x_BLC))


class Transformer(nn.Module):
    """Hita's stacks. The bidirectional one (``transformer1``) has bias-free q/k/v and heads of
    ``head_dim``; the causal ones split ``dim`` over the heads and have biases."""

    def __init__(self, dim: int, depth: int, heads: int, head_dim: int, mlp_dim: int, causal: bool) -> None:
        super().__init__()
        self.causal = causal
        head_dim = dim // heads if causal else head_dim
        self.layers = nn.ModuleList(Layer(dim, heads, head_dim, mlp_dim, qkv_bias=causal) for _ in range(depth))

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x_BLC = layer(x_BLC, self.causal)
        return x_BLC


def _embedding(*shape: int) -> nn.Parameter:
    """Learned tokens and positions ~ N(0, dim^-1), as upstream initialises them."""
    return nn.Parameter(torch.randn(*shape) * shape[-1] ** -0.5)


class EncodeTransformer(nn.Module):
    """Conv features ``(B, dim, g, g)`` + the image -> (patch features ``(B, dim, g, g)``, holistic ``(B, K, dim)``)."""

    def __init__(self, dim: int, depth: int, heads: int, head_dim: int, mlp_dim: int, grid: int, num_slots: int,
                 dino: DinoV2, dino_width: int, dino_image_size: int) -> None:
        super().__init__()
        self.dino, self.dino_image_size = dino, dino_image_size
        self.proj = nn.Sequential(nn.Linear(dino_width, dim, bias=False), nn.LayerNorm(dim), nn.ReLU(),
                                  nn.Linear(dim, dim, bias=False), nn.LayerNorm(dim))
        self.carrier_tokens = _embedding(1, num_slots, dim)
        self.pos_embed = _embedding(1, grid * grid, dim)
        self.norm_pre1, self.norm_pre2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.transformer1 = Transformer(dim, depth, heads, head_dim, mlp_dim, causal=False)
        self.transformer2 = Transformer(dim, depth, heads, head_dim, mlp_dim, causal=True)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def dino_features(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """The frozen DINOv2's class + patch tokens of an image in [-1, 1] (resized to 224 px)."""
        x = (resize_antialiased(x_B3HW, self.dino_image_size).clamp(-1, 1) + 1) / 2
        with torch.no_grad():
            return self.dino((x - self.mean) / self.std)

    def forward(self, x_B3HW: torch.Tensor, h_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, C, h, w = h_BChw.shape
        K = self.carrier_tokens.shape[1]
        dino_BMC = self.proj(self.dino_features(x_B3HW))
        patches_BLC = h_BChw.flatten(2).transpose(1, 2) + self.pos_embed
        x = torch.cat([self.carrier_tokens.expand(B, -1, -1), dino_BMC, patches_BLC], dim=1)
        x = self.transformer1(self.norm_pre1(x))
        x = torch.cat([x[:, :K], x[:, -h * w:]], dim=1)  # DINO's tokens leave
        x = self.transformer2(self.norm_pre2(x))
        return x[:, K:].transpose(1, 2).reshape(B, C, h, w), x[:, :K]


class DecodeTransformer(nn.Module):
    """Patch features ``(B, dim, g, g)`` + holistic ``(B, K, dim)`` -> features ``(B, dim, g, g)``."""

    def __init__(self, dim: int, depth: int, heads: int, head_dim: int, mlp_dim: int, grid: int, num_slots: int,
                 shift_k: int) -> None:
        super().__init__()
        self.shift_k = shift_k
        self.position_embedding = _embedding(1, grid * grid, dim)
        self.slot_position_embedding = _embedding(1, num_slots, dim)
        self.norm = nn.LayerNorm(dim)
        self.transformer = Transformer(dim, depth, heads, head_dim, mlp_dim, causal=True)

    def forward(self, h_BChw: torch.Tensor, slots_BKC: torch.Tensor) -> torch.Tensor:
        B, C, h, w = h_BChw.shape
        K = slots_BKC.shape[1]
        patches_BLC = h_BChw.flatten(2).transpose(1, 2) + self.position_embedding
        x = self.transformer(self.norm(torch.cat([slots_BKC + self.slot_position_embedding, patches_BLC], dim=1)))
        start = K - self.shift_k
        return x[:, start:start + h * w].transpose(1, 2).reshape(B, C, h, w)


class HitaTokenizer(Tokenizer):
    """Hita: images of ``image_size`` px -> ``num_slots`` holistic ids then ``g*g`` patch ids.

    The positions of both transformers are learned for one grid, so images must be
    ``image_size`` square (resize or crop first; tokbench never resizes silently).
    """

    family, kind = "hita", "discrete"

    def __init__(self, image_size: int = 336, ch: int = 128, ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
                 num_res_blocks: int = 2, dim: int = 512, depth: int = 3, heads: int = 8, head_dim: int = 64,
                 mlp_dim: int = 2048, num_slots: int = 128, shift_k: int = 4, codebook_size: int = 16384,
                 code_dim: int = 8, slot_code_dim: int = 12, dino_width: int = 1024, dino_depth: int = 24,
                 dino_heads: int = 16, dino_patch_size: int = 14, dino_grid: int = 37, dino_registers: int = 4,
                 dino_image_size: int = 224) -> None:
        super().__init__()
        ch_mult = tuple(int(m) for m in ch_mult)
        self.stride = stride_of(ch_mult)
        if image_size % self.stride:
            raise ValueError(f"image_size {image_size} must be a multiple of the conv stride {self.stride}")
        if not 0 <= shift_k <= num_slots:
            raise ValueError(f"shift_k must lie in 0..num_slots ({num_slots}), got {shift_k}")
        self.config: dict[str, Any] = dict(
            image_size=image_size, ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks, dim=dim, depth=depth,
            heads=heads, head_dim=head_dim, mlp_dim=mlp_dim, num_slots=num_slots, shift_k=shift_k,
            codebook_size=codebook_size, code_dim=code_dim, slot_code_dim=slot_code_dim, dino_width=dino_width,
            dino_depth=dino_depth, dino_heads=dino_heads, dino_patch_size=dino_patch_size, dino_grid=dino_grid,
            dino_registers=dino_registers, dino_image_size=dino_image_size)
        self.image_size, self.num_slots = image_size, num_slots
        self.grid = grid = image_size // self.stride
        self.encoder = ConvEncoder(ch, ch_mult, num_res_blocks, dim, lowest_level_attn=True)
        self.decoder = ConvDecoder(ch, ch_mult, num_res_blocks, dim, lowest_level_attn=True)
        dino = DinoV2(dino_width, dino_depth, dino_heads, dino_patch_size, dino_grid, dino_registers)
        dino.requires_grad_(False)
        self.encode_transformer = EncodeTransformer(dim, depth, heads, head_dim, mlp_dim, grid, num_slots, dino,
                                                    dino_width, dino_image_size)
        self.decode_transformer = DecodeTransformer(dim, depth, heads, head_dim, mlp_dim, grid, num_slots, shift_k)
        self.quant_conv, self.post_quant_conv = nn.Conv2d(dim, code_dim, 1), nn.Conv2d(code_dim, dim, 1)
        self.quantize = VectorQuantizer(codebook_size, code_dim, l2_normalize=True)
        self.pre_slots_quant, self.post_slots_quant = nn.Linear(dim, slot_code_dim), nn.Linear(slot_code_dim, dim)
        self.slot_quantize = VectorQuantizer(codebook_size, slot_code_dim, l2_normalize=True)

    def layout_for(self, height: int, width: int) -> TokenLayout:
        return TokenLayout("sequence", (self.num_slots + self.grid ** 2,), vocab_size=self.quantize.codebook_size)

    def _check_size(self, h: int, w: int) -> None:
        if (h, w) != (self.image_size, self.image_size):
            raise ValueError(f"Hita encodes {self.image_size}x{self.image_size} images only (its positions are "
                             f"learned for that grid); got {h}x{w}: resize or crop first")

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        self._check_size(*x_B3HW.shape[-2:])
        x = to_model_range(x_B3HW)
        z_BChw, slots_BKC = self.encode_transformer(x, self.encoder(x))
        patch_ids = self.quantize(self.quant_conv(z_BChw)).ids.flatten(1)
        slot_ids = self.slot_quantize(self.pre_slots_quant(slots_BKC).transpose(1, 2)).ids
        return Tokens(self.layout_for(*x_B3HW.shape[-2:]), ids=torch.cat([slot_ids, patch_ids], dim=1))

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        if tokens.image_size is not None:  # unset on tokens straight from encode_padded, which checked it
            self._check_size(*tokens.image_size)
        ids = tokens.ids
        expected = self.num_slots + self.grid ** 2
        if ids.dim() != 2 or ids.shape[1] != expected:
            raise ValueError(f"Hita decodes (B, {expected}) ids ({self.num_slots} holistic + {self.grid}x{self.grid} "
                             f"patch ids), got shape {tuple(ids.shape)}")
        K, g = self.num_slots, self.grid
        slots_BKC = self.post_slots_quant(self.slot_quantize.lookup(ids[:, :K], channel_dim=-1))
        h_BChw = self.post_quant_conv(self.quantize.lookup(ids[:, K:].reshape(-1, g, g), channel_dim=1))
        return from_model_range(self.decoder(self.decode_transformer(h_BChw, slots_BKC)))
