"""NVIDIA Cosmos image tokenizers (Cosmos-Tokenizer CI / DI) as tokbench tokenizers: ``cosmos`` family.

The autoencoder is the LDM conv encoder/decoder of `tokbench.nn.conv` between a Haar wavelet
transform and its inverse: the image (in ``[-1, 1]``) is split ``log2(patch_size)`` times into the
four 2x2 Haar sub-bands (``(B, C, H, W) -> (B, 4C, H/2, W/2)``), so the encoder starts at
``H / patch_size`` with ``3 * patch_size**2`` channels and downsamples only
``log2(spatial_compression / patch_size)`` of its levels (the first ones; the decoder upsamples in
its last that many, the first to run). The released configs: ``ch=128, ch_mult=(2, 4, 4),
num_res_blocks=2, patch_size=4``, no attention outside the middle blocks, spatial compression 8
(one level resampled) or 16 (two).

* CI (continuous): ``quant_conv`` (1x1, ``z_channels -> latent_channels``) gives the latents as
  they are (the released "AE" formulation: no posterior, no scaling); ``post_quant_conv`` maps back.
* DI (discrete): ``quant_conv`` gives ``len(levels)`` channels quantized by FSQ
  (`FiniteScalarQuantizer`, levels ``(8, 8, 8, 5, 5, 5)``: 64,000 codes, channel 0 the fastest
  digit of the id, as upstream's ``codes_to_indices``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from tokbench.nn.conv import ConvDecoder, ConvEncoder
from tokbench.nn.family import from_model_range, to_model_range
from tokbench.quantize.fsq import FiniteScalarQuantizer
from tokbench.tokenizer import AutoencoderOutput, Tokenizer
from tokbench.tokens import TokenLayout, Tokens

RELEASE_LEVELS = (8, 8, 8, 5, 5, 5)


def haar_analysis(x_BCHW: torch.Tensor, times: int) -> torch.Tensor:
    """``times`` orthonormal-Haar splits (halved): each ``(B, C, H, W) -> (B, 4C, H/2, W/2)`` with the
    channels ordered ``[LL, LH, HL, HH]`` (each a block of ``C``), LH = low along width, high along height."""
    for _ in range(times):
        x00, x01 = x_BCHW[..., 0::2, 0::2], x_BCHW[..., 0::2, 1::2]
        x10, x11 = x_BCHW[..., 1::2, 0::2], x_BCHW[..., 1::2, 1::2]
        x_BCHW = torch.cat([x00 + x01 + x10 + x11, x00 + x01 - x10 - x11,
                            x00 - x01 + x10 - x11, x00 - x01 - x10 + x11], dim=1) / 4
    return x_BCHW


def haar_synthesis(y_BCHW: torch.Tensor, times: int) -> torch.Tensor:
    """The inverse of `haar_analysis`: each ``(B, 4C, h, w) -> (B, C, 2h, 2w)``."""
    for _ in range(times):
        ll, lh, hl, hh = y_BCHW.chunk(4, dim=1)
        B, C, h, w = ll.shape
        out = y_BCHW.new_empty(B, C, 2 * h, 2 * w)
        out[..., 0::2, 0::2], out[..., 0::2, 1::2] = ll + lh + hl + hh, ll + lh - hl - hh
        out[..., 1::2, 0::2], out[..., 1::2, 1::2] = ll - lh + hl - hh, ll - lh - hl + hh
        y_BCHW = out
    return y_BCHW


def _log2(value: int, what: str) -> int:
    if value < 1 or value & (value - 1):
        raise ValueError(f"cosmos: {what} must be a power of 2, got {value}")
    return int(math.log2(value))


class CosmosAutoencoder(Tokenizer):
    """The wavelet-wrapped conv encoder/decoder both Cosmos image tokenizers share (see the module docstring).

    ``enc_attn_levels`` / ``dec_attn_levels``: levels (0 = full resolution) with attention after every
    ResNet block (none in the releases). ``bottleneck`` is the channel count between ``quant_conv``
    and ``post_quant_conv``.
    """

    family = "cosmos"

    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, patch_size: int,
                 spatial_compression: int, z_channels: int, bottleneck: int,
                 enc_attn_levels: list[int] | None, dec_attn_levels: list[int] | None) -> None:
        super().__init__()
        ch_mult = tuple(int(m) for m in ch_mult)
        self.patch_levels = _log2(int(patch_size), "patch_size")
        resampled = _log2(int(spatial_compression), "spatial_compression") - self.patch_levels
        if not 0 <= resampled <= len(ch_mult):
            raise ValueError(f"cosmos: spatial_compression {spatial_compression} with patch_size {patch_size} needs "
                             f"{resampled} resampled levels; the encoder has {len(ch_mult)} (ch_mult={list(ch_mult)})")
        enc_attn = sorted(int(a) for a in enc_attn_levels or ())
        dec_attn = sorted(int(a) for a in dec_attn_levels or ())
        self.stride = int(spatial_compression)
        self.config = dict(ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks, patch_size=int(patch_size),
                           spatial_compression=int(spatial_compression), z_channels=z_channels,
                           enc_attn_levels=enc_attn, dec_attn_levels=dec_attn)
        wavelet_channels = 3 * int(patch_size) ** 2
        self.encoder = ConvEncoder(ch, ch_mult, num_res_blocks, z_channels, in_channels=wavelet_channels,
                                   attn_levels=enc_attn, resampled_levels=resampled)
        self.decoder = ConvDecoder(ch, ch_mult, num_res_blocks, z_channels, out_channels=wavelet_channels,
                                   attn_levels=dec_attn, resampled_levels=resampled)
        self.quant_conv = nn.Conv2d(z_channels, bottleneck, 1)
        self.post_quant_conv = nn.Conv2d(bottleneck, z_channels, 1)

    def features(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """Images in ``[0, 1]`` -> the bottleneck ``(B, bottleneck, H/s, W/s)`` (before any quantization)."""
        return self.quant_conv(self.encoder(haar_analysis(to_model_range(x_B3HW), self.patch_levels)))

    def decode_features(self, z_BChw: torch.Tensor) -> torch.Tensor:
        """The bottleneck -> images in ``[0, 1]`` (not clamped)."""
        return from_model_range(haar_synthesis(self.decoder(self.post_quant_conv(z_BChw)), self.patch_levels))

    def last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight


class CosmosContinuousTokenizer(CosmosAutoencoder):
    """Cosmos-Tokenizer CI: images -> ``(B, latent_channels, H/s, W/s)`` latents (defaults: CI16x16)."""

    kind = "continuous"

    def __init__(self, ch: int = 128, ch_mult: tuple[int, ...] = (2, 4, 4), num_res_blocks: int = 2,
                 patch_size: int = 4, spatial_compression: int = 16, z_channels: int = 16, latent_channels: int = 16,
                 enc_attn_levels: list[int] | None = None, dec_attn_levels: list[int] | None = None) -> None:
        super().__init__(ch, ch_mult, num_res_blocks, patch_size, spatial_compression, z_channels, latent_channels,
                         enc_attn_levels, dec_attn_levels)
        self.latent_channels = latent_channels
        self.config["latent_channels"] = latent_channels

    def layout_for(self, height: int, width: int) -> TokenLayout:
        return TokenLayout("grid", (height // self.stride, width // self.stride), latent_channels=self.latent_channels)

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        return Tokens(self.layout_for(*x_B3HW.shape[-2:]), latents=self.features(x_B3HW))

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        return self.decode_features(tokens.latents)

    def autoencode(self, x_B3HW: torch.Tensor) -> AutoencoderOutput:
        """A plain autoencoder (the released formulation): no regularisation term."""
        return AutoencoderOutput(self.decode_features(self.features(x_B3HW)), {}, {})


class CosmosDiscreteTokenizer(CosmosAutoencoder):
    """Cosmos-Tokenizer DI: images -> an ``H/s x W/s`` grid of FSQ ids (defaults: DI16x16)."""

    kind = "discrete"

    def __init__(self, ch: int = 128, ch_mult: tuple[int, ...] = (2, 4, 4), num_res_blocks: int = 2,
                 patch_size: int = 4, spatial_compression: int = 16, z_channels: int = 256,
                 levels: tuple[int, ...] = RELEASE_LEVELS, enc_attn_levels: list[int] | None = None,
                 dec_attn_levels: list[int] | None = None) -> None:
        quantize = FiniteScalarQuantizer(levels)
        super().__init__(ch, ch_mult, num_res_blocks, patch_size, spatial_compression, z_channels, len(quantize.levels),
                         enc_attn_levels, dec_attn_levels)
        self.quantize = quantize
        self.config["levels"] = list(quantize.levels)

    def layout_for(self, height: int, width: int) -> TokenLayout:
        grid = (height // self.stride, width // self.stride)
        return TokenLayout("grid", grid, vocab_size=self.quantize.codebook_size)

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        return Tokens(self.layout_for(*x_B3HW.shape[-2:]), ids=self.quantize(self.features(x_B3HW)).ids)

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        return self.decode_features(self.quantize.lookup(tokens.ids, channel_dim=1))

    def autoencode(self, x_B3HW: torch.Tensor) -> AutoencoderOutput:
        q = self.quantize(self.features(x_B3HW))
        return AutoencoderOutput(self.decode_features(q.z_q), q.losses, q.stats)


def build_cosmos_family(**options) -> CosmosAutoencoder:
    """The ``cosmos`` family: DI when the options name FSQ ``levels``, CI otherwise."""
    return CosmosDiscreteTokenizer(**options) if "levels" in options else CosmosContinuousTokenizer(**options)
