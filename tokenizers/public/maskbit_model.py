"""MaskBit's tokenizers (markweberdev/maskbit ``ConvVQModel``: "VQGAN+", with lookup-free bits or a
codebook) -> `MaskBitTokenizer`.

No tokbench family expresses it exactly, for three reasons: its residual blocks have bias-free
convolutions and, where the width changes, a 1x1 shortcut that projects the block's *output*
(``out = h + W h``, not ``W x + h``); it has no attention anywhere; and it reads images in
``[0, 1]`` as they are (no ``2x - 1``), its evaluation clamping reconstructions to ``[0, 1]``.
The resampling is the one tokbench's `Downsample` / `Upsample` do (a stride-2 3x3 conv padded
right and bottom only, as MaskBit's ``Conv2dSame`` pads even sizes; nearest 2x then a 3x3 conv);
``downsample="avg_pool"`` is upstream's ``sample_with_conv: False`` (2x2 average pooling).

Codes (``quantizer``):

* ``"lfq"`` (the MaskBit tokenizers): tokbench's `LookupFreeQuantizer` of ``token_size`` bits.
  MaskBit's ``LookupFreeQuantizer`` has the same id layout -- bit ``c`` is 1 where channel ``c``
  is positive (zero counts as negative) and ``id = sum_c bit_c * 2**c``, channel 0 the least
  significant bit, exactly as Open-MAGVIT2's code computes it -- and decodes a 0 bit to -1, a
  1 bit to +1.
* ``"vq"`` (VQGAN+): tokbench's `VectorQuantizer`, ``codebook_size`` codes of dimension
  ``token_size`` compared in L2 as they are (MaskBit's ``SimpleVectorizer`` without
  ``use_l2_normalisation``, as its configs set it).

Module and parameter names follow upstream (``encoder.down.{i}.res_blocks.{j}``,
``decoder.up.{k}`` with ``k = 0`` the lowest resolution), except that the resampling convs sit
one level deeper (``down_conv.conv``, ``upsample_conv.conv``) and the codebook is
``quantize.embedding``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tokbench.nn.conv import Downsample, Upsample, group_norm
from tokbench.quantize import LookupFreeQuantizer, VectorQuantizer
from tokbench.tokenizer import AutoencoderOutput, Tokenizer
from tokbench.tokens import TokenLayout, Tokens

# MaskBit's training config (configs/tokenizer/maskbit_tokenizer_*bit.yaml): commitment 0.25,
# entropy weight 0.02 at temperature 0.01, entropy_gamma 1 (the codebook term's weight). The entropies
# are tokbench's (exact per-sample log-softmax; MaskBit clamps probabilities at 1e-5 before the log),
# and MaskBit's schedule that anneals the entropy weight is a training recipe, not part of the model.
LFQ_OPTIONS = dict(beta=0.25, entropy_weight=0.02, temperature=0.01, codebook_entropy_weight=1.0)
QUANTIZERS = ("lfq", "vq")
DOWNSAMPLES = ("conv", "avg_pool")


class ResidualBlock(nn.Module):
    """GroupNorm-swish-conv twice (bias-free 3x3 convs); where widths change, ``h + nin_shortcut(h)``."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = group_norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.norm2, self.conv2 = group_norm(out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.nin_shortcut = nn.Conv2d(out_ch, out_ch, 1, bias=False) if in_ch != out_ch else None

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x_BChw)))
        h = self.conv2(F.silu(self.norm2(h)))
        # MaskBit's shortcut projects the block's output (the released weights were trained so).
        return h + (x_BChw if self.nin_shortcut is None else self.nin_shortcut(h))


class Stage(nn.Module):
    """``res_blocks``, then one of ``down_conv`` (``resample="conv"``), ``down_pool`` (``"avg_pool"``),
    ``upsample_conv`` (``"up"``) or nothing."""

    def __init__(self, in_ch: int, out_ch: int, num_res_blocks: int, resample: str | None = None) -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList(ResidualBlock(in_ch if i == 0 else out_ch, out_ch)
                                        for i in range(num_res_blocks))
        self.down_conv = Downsample(out_ch) if resample == "conv" else None
        self.down_pool = nn.AvgPool2d(2) if resample == "avg_pool" else None
        self.upsample_conv = Upsample(out_ch) if resample == "up" else None

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        for block in self.res_blocks:
            x_BChw = block(x_BChw)
        for resample in (self.down_conv, self.down_pool, self.upsample_conv):
            if resample is not None:
                x_BChw = resample(x_BChw)
        return x_BChw


class Encoder(nn.Module):
    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, token_size: int,
                 downsample: str = "conv") -> None:
        super().__init__()
        widths = [ch] + [ch * m for m in ch_mult]
        last = len(ch_mult) - 1
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1, bias=False)
        self.down = nn.ModuleList(Stage(widths[i], widths[i + 1], num_res_blocks, downsample if i < last else None)
                                  for i in range(len(ch_mult)))
        self.mid = Stage(widths[-1], widths[-1], num_res_blocks)
        self.norm_out, self.conv_out = group_norm(widths[-1]), nn.Conv2d(widths[-1], token_size, 1)

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x_B3HW)
        for stage in self.down:
            h = stage(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, token_size: int) -> None:
        super().__init__()
        c = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(token_size, c, 3, padding=1)
        self.mid = Stage(c, c, num_res_blocks)
        ups = []
        for level in reversed(range(len(ch_mult))):  # lowest resolution first, upstream's order
            ups.append(Stage(c, ch * ch_mult[level], num_res_blocks, "up" if level > 0 else None))
            c = ch * ch_mult[level]
        self.up = nn.ModuleList(ups)
        self.norm_out, self.conv_out = group_norm(c), nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, zq_BDhw: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(zq_BDhw))
        for stage in self.up:
            h = stage(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class MaskBitTokenizer(Tokenizer):
    """MaskBit / VQGAN+: images -> an ``h x w`` grid of ids (``h = H / 2**(len(ch_mult) - 1)``):
    LFQ ids of ``token_size`` bits, or the nearest of ``codebook_size`` codes of dimension
    ``token_size`` (``quantizer="vq"``). Trainable with the quantizer's losses at MaskBit's weights."""

    family, kind = "maskbit", "discrete"

    def __init__(self, ch: int = 128, ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4), num_res_blocks: int = 2,
                 token_size: int = 18, quantizer: str = "lfq", codebook_size: int | None = None,
                 downsample: str = "conv") -> None:
        super().__init__()
        ch_mult = tuple(int(m) for m in ch_mult)
        if not ch_mult or ch % 32 or any(ch * m % 32 for m in ch_mult):
            raise ValueError(f"MaskBit widths must be multiples of 32 (GroupNorm(32)), got ch={ch}, "
                             f"ch_mult={list(ch_mult)}")
        if num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {num_res_blocks}")
        if quantizer not in QUANTIZERS or downsample not in DOWNSAMPLES:
            raise ValueError(f"quantizer must be one of {QUANTIZERS} and downsample one of {DOWNSAMPLES}, got "
                             f"{quantizer!r} and {downsample!r}")
        if (quantizer == "vq") != (codebook_size is not None):
            raise ValueError(f"codebook_size is given exactly when quantizer='vq' (LFQ has 2**token_size codes), "
                             f"got quantizer={quantizer!r}, codebook_size={codebook_size!r}")
        self.config: dict[str, Any] = dict(ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks,
                                           token_size=token_size, quantizer=quantizer, codebook_size=codebook_size,
                                           downsample=downsample)
        self.stride = 2 ** (len(ch_mult) - 1)
        self.encoder = Encoder(ch, ch_mult, num_res_blocks, token_size, downsample)
        self.quantize = (LookupFreeQuantizer(token_size, **LFQ_OPTIONS) if quantizer == "lfq"
                         else VectorQuantizer(codebook_size, token_size, beta=0.25))
        self.decoder = Decoder(ch, ch_mult, num_res_blocks, token_size)

    def layout_for(self, height: int, width: int) -> TokenLayout:
        grid = (height // self.stride, width // self.stride)
        return TokenLayout("grid", grid, vocab_size=self.quantize.codebook_size)

    def features(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """Pre-quantization features ``(B, token_size, h, w)`` of images in ``[0, 1]``."""
        return self.encoder(x_B3HW)

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        return Tokens(self.layout_for(*x_B3HW.shape[-2:]), ids=self.quantize(self.features(x_B3HW)).ids)

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        return self.decoder(self.quantize.lookup(tokens.ids, channel_dim=1)).clamp(0, 1)

    def autoencode(self, x_B3HW: torch.Tensor) -> AutoencoderOutput:
        q = self.quantize(self.features(x_B3HW))
        return AutoencoderOutput(self.decoder(q.z_q), q.losses, q.stats)

    def last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight
