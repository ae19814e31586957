"""GigaTok (SilentView/GigaTok ``VQVitModelPlus``): a tokbench `Tokenizer` of its own.

A hybrid 1D tokenizer. Encode: a VQGAN-style CNN (no attention) maps the image to a
``z_channels`` grid (stride ``2**(len(ch_mult)-1)``); a Q-former (pre-norm DETR decoder
layers) turns that grid into ``num_tokens`` 1D tokens whose queries are multi-level
average pools of the grid (1 + 1 + 2 + 4 + ... tokens, halving the blocks row first, then
column); the tokens go 1x1 to ``code_dim`` and are matched, l2-normalized, to an
l2-normalized codebook (tokbench's `VectorQuantizer`).

Decode: codes 1x1 back to ``z_channels``; a second Q-former, whose grid queries all start
as the first token's embedding, maps the 1D tokens back to the grid; a CNN decoder with
adaptive GroupNorm (per level, scale and shift from the grid's per-channel std and mean)
and depth-to-space upsampling (DCR order) renders the image. Module names follow the
release, so its state dict loads with only the codebook and the conv shortcuts renamed.
Training-only parts (the semantic-distillation MLP) are not built.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tokbench.nn.conv import ConvEncoder, ResnetBlock, group_norm, stride_of
from tokbench.nn.family import from_model_range, to_model_range
from tokbench.quantize import VectorQuantizer
from tokbench.tokenizer import Tokenizer
from tokbench.tokens import TokenLayout, Tokens


class QFormerLayer(nn.Module):
    """Pre-norm DETR decoder layer: self-attention (positions on queries and keys, not values),
    cross-attention to the memory (its positions on keys only), then a GELU MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(width, int(width * mlp_ratio)), nn.Linear(int(width * mlp_ratio), width)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)

    def forward(self, q_BLC: torch.Tensor, mem_BSC: torch.Tensor, q_pos: torch.Tensor,
                mem_pos: torch.Tensor) -> torch.Tensor:
        h = self.norm1(q_BLC)
        q_BLC = q_BLC + self.self_attn(h + q_pos, h + q_pos, h, need_weights=False)[0]
        h = self.norm2(q_BLC)
        q_BLC = q_BLC + self.multihead_attn(h + q_pos, mem_BSC + mem_pos, mem_BSC, need_weights=False)[0]
        return q_BLC + self.linear2(F.gelu(self.linear1(self.norm3(q_BLC))))


def multi_level_queries(x_BChw: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """``(B, C, h, w)`` -> ``(B, num_tokens, C)``: the global average, then level ``l = 0..n-1``
    as ``2**l`` block averages (``2**ceil(l/2)`` columns by ``2**floor(l/2)`` rows), ``n = log2(num_tokens)``."""
    n = int(round(math.log2(num_tokens)))
    h, w = x_BChw.shape[-2:]
    groups = []
    for level in [0] + list(range(n)):
        cols, rows = 2 ** ((level + 1) // 2), 2 ** (level // 2)
        pooled = F.avg_pool2d(x_BChw, kernel_size=(h // rows, w // cols))
        groups.append(pooled.flatten(2).transpose(1, 2))
    return torch.cat(groups, dim=1)


class GridToTokens(nn.Module):
    """Q-former encoder: grid ``(B, z, g, g)`` -> tokens ``(B, z, 1, K)`` (upstream's ``s2to1encoder``).

    Positions keep the release's ``(L, 1, C)`` shape."""

    def __init__(self, grid: int, width: int, depth: int, heads: int, num_tokens: int, z_channels: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.ln_pre, self.encoder_embed = nn.LayerNorm(z_channels), nn.Linear(z_channels, width)
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid, 1, width))
        self.latent_token_positional_embedding = nn.Parameter(torch.zeros(num_tokens, 1, width))
        self.global_proj = nn.Linear(width, width)
        self.transformer = nn.ModuleList(QFormerLayer(width, heads) for _ in range(depth))
        self.ln_post, self.conv_out = nn.LayerNorm(width), nn.Conv2d(width, z_channels, 1)

    def forward(self, s_Bzhw: torch.Tensor) -> torch.Tensor:
        B, _, h, w = s_Bzhw.shape
        x_BLC = self.encoder_embed(self.ln_pre(s_Bzhw.flatten(2).transpose(1, 2)))
        q_BKC = self.global_proj(multi_level_queries(x_BLC.transpose(1, 2).reshape(B, -1, h, w), self.num_tokens))
        mem_pos, q_pos = self.positional_embedding.transpose(0, 1), self.latent_token_positional_embedding.transpose(0, 1)
        for layer in self.transformer:
            q_BKC = layer(q_BKC, x_BLC, q_pos, mem_pos)
        return self.conv_out(self.ln_post(q_BKC).transpose(1, 2).unsqueeze(2))


class TokensToGrid(nn.Module):
    """Q-former decoder: tokens ``(B, z, 1, K)`` -> grid ``(B, z, g, g)`` (upstream's ``s1to2decoder``)."""

    def __init__(self, grid: int, width: int, depth: int, heads: int, num_tokens: int, z_channels: int) -> None:
        super().__init__()
        self.grid = grid
        self.ln_pre, self.decoder_embed = nn.LayerNorm(z_channels), nn.Linear(z_channels, width)
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid, 1, width))
        self.latent_token_positional_embedding = nn.Parameter(torch.zeros(num_tokens, 1, width))
        self.transformer = nn.ModuleList(QFormerLayer(width, heads) for _ in range(depth))
        self.ln_post, self.conv_out = nn.LayerNorm(width), nn.Conv2d(width, z_channels, 3, padding=1)

    def forward(self, t_Bz1K: torch.Tensor) -> torch.Tensor:
        B, K, g = t_Bz1K.shape[0], t_Bz1K.shape[-1], self.grid
        x_BKC = self.decoder_embed(self.ln_pre(t_Bz1K.flatten(2).transpose(1, 2)))
        q_BLC = x_BKC[:, :1].expand(-1, g * g, -1)  # every grid query starts as the first token
        q_pos, mem_pos = self.positional_embedding.transpose(0, 1), self.latent_token_positional_embedding[:K].transpose(0, 1)
        for layer in self.transformer:
            q_BLC = layer(q_BLC, x_BKC, q_pos, mem_pos)
        return self.conv_out(self.ln_post(q_BLC).transpose(1, 2).reshape(B, -1, g, g))


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm without affine, then ``gamma(std_style) * x + beta(mean_style)``; the style's
    per-channel statistics are over its positions, the variance unbiased (as released)."""

    def __init__(self, z_channels: int, ch: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.gn = nn.GroupNorm(math.gcd(32, ch), ch, eps=eps, affine=False)
        self.gamma, self.beta = nn.Linear(z_channels, ch), nn.Linear(z_channels, ch)

    def forward(self, x_BChw: torch.Tensor, style_Bzhw: torch.Tensor) -> torch.Tensor:
        s_BzL = style_Bzhw.flatten(2)
        scale = self.gamma((s_BzL.var(dim=-1) + self.eps).sqrt())[..., None, None]
        return scale * self.gn(x_BChw) + self.beta(s_BzL.mean(dim=-1))[..., None, None]


def depth_to_space(x_BChw: torch.Tensor, block: int) -> torch.Tensor:
    """DCR depth-to-space: channel ``(i * block + j) * C' + c`` goes to ``(c, y*block + i, x*block + j)``
    (`F.pixel_shuffle` is the CRD order, ``c * block**2 + i * block + j``)."""
    B, C, h, w = x_BChw.shape
    x = x_BChw.reshape(B, block, block, C // block ** 2, h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(B, C // block ** 2, h * block, w * block)


class D2SUpsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, 4 * ch, 3, padding=1)

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        return depth_to_space(self.conv1(x_BChw), 2)


class DecoderLevel(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, num_blocks: int, upsample: bool) -> None:
        super().__init__()
        self.res = nn.ModuleList(ResnetBlock(in_ch if j == 0 else out_ch, out_ch) for j in range(num_blocks))
        self.upsample = D2SUpsample(out_ch) if upsample else None


class AdaptiveConvDecoder(nn.Module):
    """Grid ``(B, z, g, g)`` -> image: the VQGAN decoder (no attention) with an `AdaptiveGroupNorm`
    before each level (styled by the decoder's input) and `D2SUpsample` between levels."""

    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, z_channels: int) -> None:
        super().__init__()
        c = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, c, 3, padding=1)
        self.mid = nn.ModuleList([ResnetBlock(c, c), ResnetBlock(c, c)])
        self.adaptive, self.conv_blocks = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(ch_mult))):  # execution order, as released
            self.adaptive.append(AdaptiveGroupNorm(z_channels, c))
            self.conv_blocks.append(DecoderLevel(c, ch * ch_mult[level], num_res_blocks + 1, upsample=level > 0))
            c = ch * ch_mult[level]
        self.norm_out, self.conv_out = group_norm(c), nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, z_Bzhw: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z_Bzhw)
        for block in self.mid:
            h = block(h)
        for adaptive, level in zip(self.adaptive, self.conv_blocks):
            h = adaptive(h, z_Bzhw)
            for block in level.res:
                h = block(h)
            if level.upsample is not None:
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class GigaTokTokenizer(Tokenizer):
    """GigaTok: ``image_size`` px images -> ``num_tokens`` ids in its 1D (coarse-to-fine pooled) order.

    ``width``/``depth``/``heads`` size the Q-former encoder, ``dec_*`` the decoder. Positions are
    learned for one grid, so images must be ``image_size`` square (tokbench never resizes silently).
    """

    family, kind = "gigatok", "discrete"

    def __init__(self, image_size: int = 256, ch: int = 128, ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
                 num_res_blocks: int = 2, z_channels: int = 256, width: int = 512, depth: int = 6, heads: int = 8,
                 dec_width: int = 512, dec_depth: int = 6, dec_heads: int = 8, num_tokens: int = 256,
                 codebook_size: int = 16384, code_dim: int = 8) -> None:
        super().__init__()
        self.stride = stride_of(tuple(ch_mult))
        if image_size % self.stride:
            raise ValueError(f"image_size {image_size} is not a multiple of the CNN stride {self.stride}")
        grid = image_size // self.stride
        levels = math.log2(num_tokens)
        if levels != int(levels) or grid % 2 ** (int(levels) // 2) or grid % 2 ** ((int(levels) - 1) // 2):
            raise ValueError(f"num_tokens must be a power of two whose finest pooling level divides the "
                             f"{grid}x{grid} grid; got {num_tokens}")
        self.config: dict[str, Any] = dict(
            image_size=image_size, ch=ch, ch_mult=[int(m) for m in ch_mult], num_res_blocks=num_res_blocks,
            z_channels=z_channels, width=width, depth=depth, heads=heads, dec_width=dec_width, dec_depth=dec_depth,
            dec_heads=dec_heads, num_tokens=num_tokens, codebook_size=codebook_size, code_dim=code_dim)
        self.image_size, self.num_tokens, self.code_dim = image_size, num_tokens, code_dim
        self.encoder = ConvEncoder(ch, tuple(ch_mult), num_res_blocks, z_channels, mid_attn=False)
        self.s2to1encoder = GridToTokens(grid, width, depth, heads, num_tokens, z_channels)
        self.quant_conv = nn.Conv2d(z_channels, code_dim, 1)
        self.quantize = VectorQuantizer(codebook_size, code_dim, l2_normalize=True)
        self.post_quant_conv = nn.Conv2d(code_dim, z_channels, 1)
        self.s1to2decoder = TokensToGrid(grid, dec_width, dec_depth, dec_heads, num_tokens, z_channels)
        self.decoder = AdaptiveConvDecoder(ch, tuple(ch_mult), num_res_blocks, z_channels)
        self._init_positions()

    def _init_positions(self) -> None:
        """Learned positions ~ N(0, width^-1), as upstream initialises them."""
        for name, param in self.named_parameters():
            if param.device.type != "meta" and name.endswith("positional_embedding"):
                with torch.no_grad():
                    param.normal_(std=param.shape[-1] ** -0.5)

    def layout_for(self, height: int, width: int) -> TokenLayout:
        return TokenLayout("sequence", (self.num_tokens,), vocab_size=self.quantize.codebook_size)

    def _check_size(self, h: int, w: int) -> None:
        if (h, w) != (self.image_size, self.image_size):
            raise ValueError(f"GigaTok encodes {self.image_size}x{self.image_size} images only (its positions are "
                             f"learned for that grid); got {h}x{w}: resize or crop first")

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        self._check_size(*x_B3HW.shape[-2:])
        t_Bz1K = self.s2to1encoder(self.encoder(to_model_range(x_B3HW)))
        ids = self.quantize(self.quant_conv(t_Bz1K).squeeze(2), channel_dim=1).ids
        return Tokens(self.layout_for(*x_B3HW.shape[-2:]), ids=ids)

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        if tokens.image_size is not None:  # unset on tokens straight from encode_padded, which checked it
            self._check_size(*tokens.image_size)
        codes_BDK = self.quantize.lookup(tokens.ids, channel_dim=1)
        t_Bz1K = self.post_quant_conv(codes_BDK.unsqueeze(2))
        return from_model_range(self.decoder(self.s1to2decoder(t_Bz1K)))
