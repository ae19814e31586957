"""Infinity's bitwise multi-scale tokenizer (FoundationVision/Infinity, ``infinity/models/bsq_vae``) as
a tokbench tokenizer: ``infinity`` family.

The autoencoder is the LDM/FLUX conv encoder and decoder with no attention anywhere and no quant
convs (`ConvEncoder` / `ConvDecoder` with ``mid_attn=False``): the encoder's ``code_dim`` output
channels are the quantizer's input, and the decoder reads the summed codes directly.

The quantizer (upstream ``MultiScaleBSQ`` with ``new_quant=True``, no projections, no layer norm)
is a multi-scale residual one whose codes are binary spherical (BSQ): per scale ``k``, coarse to
fine, the remaining residual is area-downsampled to map ``k``'s size, each position's ``code_dim``
channels become one bit each (1 where the channel is positive: the sign of the l2-normalised
vector, which is the sign of the vector), the code is ``(2 bit - 1) / sqrt(code_dim)`` (on the unit
sphere), upsampled bilinearly (upstream's ``trilinear`` on a single frame) to the full grid and
subtracted from the residual. The decoder reads the sum of the upsampled codes. Unlike VAR's
quantizer there is no codebook and no φ refinement.

Ids: one id per position of each map, maps flattened scale by scale in raster order (the
``scales`` layout of the residual-scale family). **Bit layout**: ``id = sum_c bit_c * 2**c`` --
channel 0 is the least significant bit, as tokbench's LFQ/BSQ quantizers (`bits_to_ids`). With
64 bits the id is that 64-bit pattern read as a signed int64 (bit 63 is the sign bit), so every
pattern has one id. Upstream's own tokens are the bits themselves (``bit_indices``, ``(B, h, w,
code_dim)`` per scale, which Infinity's transformer predicts); `bits_of` / `ids_of` convert. Upstream's
``int_label`` path reads channel 0 as the *most* significant bit; upstream never produces such ids
(its quantizer returns ``indices=None``).

Schedule: Infinity's square schedule 1,2,4,6,8,12,16,20,24,32,40,48,64 cut at the final map
side (7 scales at 256 px, 10 at 512, 13 at 1024: upstream's ``schedule_mode="dynamic"`` at
aspect ratio 1, the only square sizes upstream defines). Non-square grids map the square
schedule by tokbench's rule (`TokenLayout.scale_shapes`); Infinity's own per-aspect-ratio tables
(defined only at three pixel budgets) differ there.
"""
from __future__ import annotations

import math
from itertools import accumulate
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tokbench.nn.conv import ConvDecoder, ConvEncoder, stride_of
from tokbench.nn.family import from_model_range, to_model_range
from tokbench.quantize.binary import bits_to_ids, ids_to_bits
from tokbench.tokenizer import Tokenizer
from tokbench.tokens import TokenLayout, Tokens, scale_schedule_shapes

INFINITY_SCALES = (1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64)
MAX_BITS = 64  # ids are int64


class MultiScaleBitQuantizer(nn.Module):
    """Infinity's multi-scale residual BSQ (see the module docstring); no parameters."""

    def __init__(self, code_dim: int, scales: tuple[int, ...] = INFINITY_SCALES) -> None:
        super().__init__()
        scales = tuple(int(s) for s in scales)
        if not 1 <= code_dim <= MAX_BITS:
            raise ValueError(f"code_dim (bits per position) must be in 1..{MAX_BITS}, got {code_dim}")
        if not scales or any(b <= a for a, b in zip(scales, scales[1:])):
            raise ValueError(f"scales must be a non-empty increasing schedule, got {scales}")
        self.code_dim, self.scales = code_dim, scales
        self.code_value = 1.0 / math.sqrt(code_dim)

    def schedule_for(self, grid: tuple[int, int]) -> tuple[int, ...]:
        """The schedule's sides below the grid's longer side, then that side."""
        side = max(int(grid[0]), int(grid[1]))
        return tuple(s for s in self.scales if s < side) + (side,)

    def scale_shapes(self, grid: tuple[int, int]) -> list[tuple[int, int]]:
        return scale_schedule_shapes(self.schedule_for(grid), grid)

    def codes_of(self, bits_BhwD: torch.Tensor) -> torch.Tensor:
        """Bits ``(B, h, w, D)`` -> codes ``(B, D, h, w)`` of ``+-1/sqrt(D)``."""
        return ((bits_BhwD.float() * 2 - 1) * self.code_value).permute(0, 3, 1, 2)

    @staticmethod
    def to_grid(codes_BDhw: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        if tuple(codes_BDhw.shape[-2:]) == tuple(hw):
            return codes_BDhw
        return F.interpolate(codes_BDhw, size=hw, mode="bilinear", align_corners=False)

    def encode(self, f_BDHW: torch.Tensor) -> list[torch.Tensor]:
        """Per-scale bit maps ``[(B, h_k, w_k, D) bool, ...]`` of encoder features ``(B, D, H, W)``."""
        if f_BDHW.shape[1] != self.code_dim:
            raise ValueError(f"expected {self.code_dim} channels, got shape {tuple(f_BDHW.shape)}")
        hw = tuple(f_BDHW.shape[-2:])
        rest_BDHW = f_BDHW.float()
        bits = []
        for ph, pw in self.scale_shapes(hw):
            z_BDhw = rest_BDHW if (ph, pw) == hw else F.interpolate(rest_BDHW, size=(ph, pw), mode="area")
            bits_BhwD = z_BDhw.permute(0, 2, 3, 1) > 0
            rest_BDHW = rest_BDHW - self.to_grid(self.codes_of(bits_BhwD), hw)
            bits.append(bits_BhwD)
        return bits

    def decode(self, bits: list[torch.Tensor], hw: tuple[int, int], num_scales: int | None = None) -> torch.Tensor:
        """The summed codes ``(B, D, H, W)`` of the first ``num_scales`` bit maps (all by default)."""
        k = len(bits) if num_scales is None else num_scales
        if not 1 <= k <= len(bits):
            raise ValueError(f"num_scales must be in 1..{len(bits)}, got {k}")
        return sum(self.to_grid(self.codes_of(b), hw) for b in bits[:k])


class InfinityTokenizer(Tokenizer):
    """Images -> Infinity's multi-scale bit maps as ids (``code_dim`` bits each; see the module
    docstring for the bit layout). ``decode_prefix`` decodes the first scales only (coarse to fine)."""

    family, kind = "infinity", "discrete"

    def __init__(self, ch: int = 128, ch_mult: tuple[int, ...] = (1, 2, 4, 4, 4), num_res_blocks: int = 2,
                 code_dim: int = 32, scales: tuple[int, ...] = INFINITY_SCALES) -> None:
        super().__init__()
        ch_mult, scales = tuple(int(m) for m in ch_mult), tuple(int(s) for s in scales)
        self.config: dict[str, Any] = dict(ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks,
                                           code_dim=code_dim, scales=list(scales))
        self.quantize = MultiScaleBitQuantizer(code_dim, scales)
        self.stride = stride_of(ch_mult)
        self.encoder = ConvEncoder(ch, ch_mult, num_res_blocks, code_dim, mid_attn=False)
        self.decoder = ConvDecoder(ch, ch_mult, num_res_blocks, code_dim, mid_attn=False)

    def layout_for(self, height: int, width: int) -> TokenLayout:
        grid = (height // self.stride, width // self.stride)
        schedule = self.quantize.schedule_for(grid)
        return TokenLayout("scales", grid, vocab_size=2 ** self.quantize.code_dim, scales=schedule)

    def features(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """The encoder's output ``(B, code_dim, H/s, W/s)``: what the quantizer reads."""
        return self.encoder(to_model_range(x_B3HW))

    def decode_codes(self, f_hat_BDhw: torch.Tensor) -> torch.Tensor:
        """Summed codes -> images in ``[0, 1]`` (the decoder's output clamped to ``[-1, 1]``, as upstream)."""
        return from_model_range(self.decoder(f_hat_BDhw).clamp(-1, 1))

    def ids_of(self, bits: list[torch.Tensor]) -> torch.Tensor:
        """Per-scale bit maps ``[(B, h, w, D), ...]`` -> flat ids ``(B, L)``."""
        return torch.cat([bits_to_ids(b).flatten(1) for b in bits], dim=1)

    def bits_of(self, tokens: Tokens) -> list[torch.Tensor]:
        """Tokens -> per-scale bit maps ``[(B, h, w, D) long 0/1, ...]`` (upstream's ``bit_indices``)."""
        return [ids_to_bits(m, self.quantize.code_dim) for m in tokens.ids_per_scale()]

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        bits = self.quantize.encode(self.features(x_B3HW))
        return Tokens(self.layout_for(*x_B3HW.shape[-2:]), ids=self.ids_of(bits))

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        f_hat = self.quantize.decode(self.bits_of(tokens), tokens.layout.grid, tokens.extra.get("num_scales"))
        return self.decode_codes(f_hat)

    def prefix_lengths(self, layout: TokenLayout) -> tuple[int, ...]:
        """The token count after each whole scale."""
        return tuple(accumulate(h * w for h, w in layout.scale_shapes()))

    def decode_prefix(self, tokens: Tokens, num_tokens: int) -> torch.Tensor:
        """Decode from the first ``num_tokens`` ids, which must end at a whole scale (`prefix_lengths`)."""
        lengths = self.prefix_lengths(tokens.layout)
        if num_tokens not in lengths:
            raise ValueError(f"an Infinity prefix ends at a whole scale: num_tokens must be one of "
                             f"{', '.join(map(str, lengths))}, got {num_tokens}")
        extra = {**tokens.extra, "num_scales": lengths.index(num_tokens) + 1}
        return self.decode(Tokens(tokens.layout, tokens.image_size, ids=tokens.ids, extra=extra))
