"""TiTok (bytedance/1d-tokenizer): a tokbench `Tokenizer` of its own, for its three kinds of release.

Encode: patches + a class token + K learned latent tokens through a ViT; the K latents,
layer-normed, become ``code_dim`` vectors. Two-stage releases (``titok-l32/b64/s128``)
l2-normalize them and match them to an l2-normalized codebook; the single-stage VQ ones
(``*-vq8k``) match them to the plain codebook by L2 distance (both through tokbench's
`VectorQuantizer`, so the fused search applies); the VAE ones (``*-vae-c16``) output a
Gaussian's mean and log-variance per token, and their latents are the mean.

Decode: the codes (or latents) through a ViT decoder over mask tokens. Two-stage: per patch,
logits over 1024 proxy codes; their softmax weights the proxy codebook, and a MaskGIT-VQGAN
pixel decoder turns that map into the image. Single-stage: per patch, ``patch_size**2 * 3``
pixel values, unfolded into the image and smoothed by one 3x3 conv. Module names follow
the release so its state dict loads as it is (only the codebook is renamed).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tokbench.quantize import VectorQuantizer
from tokbench.tokenizer import Tokenizer
from tokbench.tokens import TokenLayout, Tokens

QUANTIZE_MODES = ("vq", "vae")


class ViTBlock(nn.Module):
    """Pre-norm block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))`` (exact GELU)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, hidden))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(hidden, width))

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x_BLC)
        x_BLC = x_BLC + self.attn(h, h, h, need_weights=False)[0]
        return x_BLC + self.mlp(self.ln_2(x_BLC))


def _tokens(param_1LC: torch.Tensor, batch: int) -> torch.Tensor:
    return param_1LC.unsqueeze(0).expand(batch, -1, -1) if param_1LC.dim() == 2 else param_1LC.expand(batch, -1, -1)


class ViTEncoder(nn.Module):
    """Image ``(B, 3, H, W)`` + latent tokens ``(K, C)`` -> ``(B, out_dim, 1, K)``."""

    def __init__(self, grid: int, patch_size: int, width: int, depth: int, heads: int, num_tokens: int,
                 out_dim: int, legacy: bool) -> None:
        super().__init__()
        self.legacy, self.width, self.num_tokens, self.out_dim = legacy, width, num_tokens, out_dim
        self.patch_embed = nn.Conv2d(3, width, patch_size, stride=patch_size)
        self.class_embedding = nn.Parameter(torch.zeros(1, width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.latent_token_positional_embedding = nn.Parameter(torch.zeros(num_tokens, width))
        self.ln_pre, self.ln_post = nn.LayerNorm(width), nn.LayerNorm(width)
        self.transformer = nn.ModuleList(ViTBlock(width, heads) for _ in range(depth))
        self.conv_out = nn.Conv2d(width, out_dim, 1)

    def forward(self, x_B3HW: torch.Tensor, latent_tokens_KC: torch.Tensor) -> torch.Tensor:
        B = x_B3HW.shape[0]
        patches_BLC = self.patch_embed(x_B3HW).flatten(2).transpose(1, 2)
        x = torch.cat([_tokens(self.class_embedding, B), patches_BLC], dim=1) + self.positional_embedding
        latents = _tokens(latent_tokens_KC, B) + self.latent_token_positional_embedding
        x = torch.cat([x, latents], dim=1)
        x = self.ln_pre(x)
        for block in self.transformer:
            x = block(x)
        latent_BKC = self.ln_post(x[:, -self.num_tokens:])
        if self.legacy:
            # The release reads the (B, K, C) memory as (B, C, K, 1) without a transpose.
            z = latent_BKC.reshape(B, self.width, self.num_tokens, 1)
        else:
            z = latent_BKC.transpose(1, 2).unsqueeze(-1)
        return self.conv_out(z).reshape(B, self.out_dim, 1, self.num_tokens)


class PatchesToPixels(nn.Module):
    """``(B, p*p*3, g, g)`` -> ``(B, 3, g*p, g*p)``; channels ordered ``(p_row, p_col, rgb)``
    (not `F.pixel_shuffle`'s ``(rgb, p_row, p_col)``)."""

    def __init__(self, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size

    def forward(self, x_BPgg: torch.Tensor) -> torch.Tensor:
        B, _, h, w = x_BPgg.shape
        p = self.patch_size
        return x_BPgg.reshape(B, p, p, 3, h, w).permute(0, 3, 4, 1, 5, 2).reshape(B, 3, h * p, w * p)


class ViTDecoder(nn.Module):
    """Codes ``(B, K, code_dim)`` -> proxy-code logits ``(B, num_proxy, g, g)`` (two-stage) or
    the image ``(B, 3, H, W)`` (single-stage: ``num_proxy_codes=None``)."""

    def __init__(self, grid: int, patch_size: int, width: int, depth: int, heads: int, num_tokens: int,
                 code_dim: int, num_proxy_codes: int | None) -> None:
        super().__init__()
        self.grid = grid
        self.decoder_embed = nn.Linear(code_dim, width)
        self.class_embedding = nn.Parameter(torch.zeros(1, width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.latent_token_positional_embedding = nn.Parameter(torch.zeros(num_tokens, width))
        self.ln_pre, self.ln_post = nn.LayerNorm(width), nn.LayerNorm(width)
        self.transformer = nn.ModuleList(ViTBlock(width, heads) for _ in range(depth))
        if num_proxy_codes is not None:
            self.ffn = nn.Sequential(nn.Conv2d(width, 2 * width, 1), nn.Tanh(),
                                     nn.Conv2d(2 * width, num_proxy_codes, 1))
            self.conv_out = nn.Identity()
        else:
            self.ffn = nn.Sequential(nn.Conv2d(width, patch_size * patch_size * 3, 1), PatchesToPixels(patch_size))
            self.conv_out = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, codes_BKD: torch.Tensor) -> torch.Tensor:
        B, K, _ = codes_BKD.shape
        g = self.grid
        latents = self.decoder_embed(codes_BKD) + self.latent_token_positional_embedding[:K]
        masks = torch.cat([_tokens(self.class_embedding, B), self.mask_token.expand(B, g * g, -1)], dim=1)
        x = self.ln_pre(torch.cat([masks + self.positional_embedding, latents], dim=1))
        for block in self.transformer:
            x = block(x)
        x = self.ln_post(x[:, 1:1 + g * g])
        return self.conv_out(self.ffn(x.transpose(1, 2).reshape(B, -1, g, g)))


class PixelResBlock(nn.Module):
    """MaskGIT-VQGAN ResNet block: bias-free 3x3 convs; where the width changes, the 1x1
    ``nin_shortcut`` is applied to the block's *output* (as released) and added to it."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(32, in_ch, eps=1e-6)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(32, out_ch, eps=1e-6)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.nin_shortcut = nn.Conv2d(out_ch, out_ch, 1, bias=False) if in_ch != out_ch else None

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x_BChw)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.nin_shortcut(h) if self.nin_shortcut is not None else x_BChw)


class PixelUpLevel(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, num_res_blocks: int, upsample: bool) -> None:
        super().__init__()
        self.block = nn.ModuleList(PixelResBlock(in_ch if j == 0 else out_ch, out_ch) for j in range(num_res_blocks))
        self.upsample_conv = nn.Conv2d(out_ch, out_ch, 3, padding=1) if upsample else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            h = block(h)
        if self.upsample_conv is not None:
            h = self.upsample_conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return h


class PixelDecoder(nn.Module):
    """MaskGIT-VQGAN decoder (no attention). Its TF-style "same" convolutions all have stride 1
    and odd kernels, where "same" padding is symmetric: ``padding = k // 2``."""

    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, z_channels: int) -> None:
        super().__init__()
        n = len(ch_mult)
        top = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, top, 3, padding=1)
        self.mid = nn.ModuleList(PixelResBlock(top, top) for _ in range(num_res_blocks))
        # up[i] works at level i and runs in reverse order (up[n-1] first), as released.
        self.up = nn.ModuleList(
            PixelUpLevel(ch * ch_mult[min(i + 1, n - 1)], ch * ch_mult[i], num_res_blocks, upsample=i != 0)
            for i in range(n))
        self.norm_out = nn.GroupNorm(32, ch * ch_mult[0], eps=1e-6)
        self.conv_out = nn.Conv2d(ch * ch_mult[0], 3, 3, padding=1)

    def forward(self, z_BChw: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z_BChw)
        for block in self.mid:
            h = block(h)
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class ProxyCodebook(nn.Module):
    def __init__(self, num_codes: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_codes, dim)


class TiTokTokenizer(Tokenizer):
    """TiTok: images of ``image_size`` px -> ``num_tokens`` ids (or latents) in TiTok's 1D order.

    ``two_stage`` (upstream's ``finetune_decoder``): the proxy-code head and MaskGIT pixel
    decoder, else the single-stage pixel head. ``quantize_mode``: ``"vq"`` (ids; ``l2_norm``
    as upstream's ``use_l2_norm``) or ``"vae"`` (continuous latents, the posterior mean).
    TiTok's positions are learned for one grid, so images must be ``image_size`` square
    (resize or crop first; tokbench never resizes silently).
    """

    family, kind = "titok", "discrete"

    def __init__(self, image_size: int = 256, patch_size: int = 16, width: int = 512, depth: int = 8, heads: int = 8,
                 dec_width: int | None = None, dec_depth: int | None = None, dec_heads: int | None = None,
                 num_tokens: int = 128, codebook_size: int = 4096, code_dim: int = 12, legacy: bool = True,
                 two_stage: bool = True, quantize_mode: str = "vq", l2_norm: bool = True,
                 num_proxy_codes: int = 1024, pixel_ch: int = 128, pixel_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
                 pixel_num_res_blocks: int = 2, pixel_z_channels: int = 256) -> None:
        super().__init__()
        if quantize_mode not in QUANTIZE_MODES:
            raise ValueError(f"quantize_mode must be one of {', '.join(QUANTIZE_MODES)}, got {quantize_mode!r}")
        if two_stage and quantize_mode != "vq":
            raise ValueError("a two-stage TiTok (proxy codes + pixel decoder) quantizes with quantize_mode='vq' only")
        dec_width, dec_depth, dec_heads = dec_width or width, dec_depth or depth, dec_heads or heads
        self.config: dict[str, Any] = dict(
            image_size=image_size, patch_size=patch_size, width=width, depth=depth, heads=heads, dec_width=dec_width,
            dec_depth=dec_depth, dec_heads=dec_heads, num_tokens=num_tokens, code_dim=code_dim, legacy=legacy,
            two_stage=two_stage, quantize_mode=quantize_mode)
        if quantize_mode == "vq":
            self.config.update(codebook_size=codebook_size, l2_norm=l2_norm)
        if two_stage:
            self.config.update(num_proxy_codes=num_proxy_codes, pixel_ch=pixel_ch,
                               pixel_ch_mult=[int(m) for m in pixel_ch_mult],
                               pixel_num_res_blocks=pixel_num_res_blocks, pixel_z_channels=pixel_z_channels)
        self.kind = "discrete" if quantize_mode == "vq" else "continuous"
        self.stride, self.image_size, self.num_tokens, self.code_dim = patch_size, image_size, num_tokens, code_dim
        grid = image_size // patch_size
        self.latent_tokens = nn.Parameter(torch.zeros(num_tokens, width))
        # The VAE's encoder outputs each token's mean and log-variance, stacked on the channels.
        enc_out = code_dim if quantize_mode == "vq" else 2 * code_dim
        self.encoder = ViTEncoder(grid, patch_size, width, depth, heads, num_tokens, enc_out, legacy)
        if quantize_mode == "vq":
            self.quantize = VectorQuantizer(codebook_size, code_dim, l2_normalize=l2_norm)
        self.decoder = ViTDecoder(grid, patch_size, dec_width, dec_depth, dec_heads, num_tokens, code_dim,
                                  num_proxy_codes if two_stage else None)
        if two_stage:
            self.pixel_quantize = ProxyCodebook(num_proxy_codes, pixel_z_channels)
            self.pixel_decoder = PixelDecoder(pixel_ch, tuple(int(m) for m in pixel_ch_mult), pixel_num_res_blocks,
                                              pixel_z_channels)
        self.two_stage = two_stage
        self._init_embeddings()

    def _init_embeddings(self) -> None:
        """Learned tokens and positions ~ N(0, width^-1), as upstream initialises them."""
        for name, param in self.named_parameters():
            if param.device.type != "meta" and name.rsplit(".", 1)[-1] in (
                    "latent_tokens", "class_embedding", "positional_embedding", "mask_token",
                    "latent_token_positional_embedding"):
                with torch.no_grad():
                    param.normal_(std=param.shape[-1] ** -0.5)

    def layout_for(self, height: int, width: int) -> TokenLayout:
        if self.kind == "continuous":
            return TokenLayout("sequence", (self.num_tokens,), latent_channels=self.code_dim)
        return TokenLayout("sequence", (self.num_tokens,), vocab_size=self.quantize.codebook_size)

    def _check_size(self, h: int, w: int) -> None:
        if (h, w) != (self.image_size, self.image_size):
            raise ValueError(f"TiTok encodes {self.image_size}x{self.image_size} images only (its positions are "
                             f"learned for that grid); got {h}x{w}: resize or crop first")

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        self._check_size(*x_B3HW.shape[-2:])
        z_BD1K = self.encoder(x_B3HW, self.latent_tokens)  # TiTok takes [0, 1] images as they are
        layout = self.layout_for(*x_B3HW.shape[-2:])
        if self.kind == "continuous":
            mean_BCK = z_BD1K[:, :self.code_dim, 0]  # channels: mean, then log-variance
            return Tokens(layout, latents=mean_BCK.transpose(1, 2).contiguous())
        return Tokens(layout, ids=self.quantize(z_BD1K.squeeze(2), channel_dim=1).ids)

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        if tokens.image_size is not None:  # unset on tokens straight from encode_padded, which checked it
            self._check_size(*tokens.image_size)
        if self.kind == "continuous":
            codes_BKD = tokens.latents.to(self.latent_tokens.dtype)
        else:
            codes_BKD = self.quantize.lookup(tokens.ids, channel_dim=-1)
        out = self.decoder(codes_BKD)
        if not self.two_stage:
            return out
        proxy_BZgg = torch.einsum("bphw,pz->bzhw", out.softmax(1), self.pixel_quantize.embedding.weight)
        return self.pixel_decoder(proxy_BZgg)
