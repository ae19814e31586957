"""RQ-VAE (kakaobrain/rq-vae-transformer ``rqvae/models/rqvae``): taming's conv encoder/decoder
around a residual quantizer of depth ``D`` over one shared codebook.

At every position the ``code_dim``-vector is quantized ``D`` times: depth ``d`` picks the code
nearest (squared L2) to what the previous depths left over, and the quantized vector is the sum
of the ``D`` codes. This is not VAR's multi-scale residual (every depth works at the full grid,
with no resampling), so it is a class of its own, built from the family parts: `ConvEncoder`,
`ConvDecoder` and one `VectorQuantizer` searched ``D`` times.

Ids layout: upstream's codes are ``(B, h, w, D)``. tokbench's ids are the ``sequence`` of
``h*w*D`` tokens, position-major (raster order) with the depth innermost, ``ids[b, (i*w + j)*D +
d] = codes[b, i, j, d]`` -- the order in which RQ-Transformer generates them (a position's ``D``
codes one after another, then the next position). Every code is kept, so bits per image
(``h*w*D*log2(codebook_size)``) are exact. Decoding folds the sequence back into the ``h x w``
grid of the image size the tokens carry (`Tokens.image_size`).

Inference only: upstream trains the codebook with EMA updates and a cumulative commitment loss,
which tokbench's training loop does not implement for this class (``trainable`` is False).
"""
from __future__ import annotations

import math

import torch

from tokbench.nn.conv import ConvDecoder, ConvEncoder, stride_of
from tokbench.nn.family import from_model_range, to_model_range
from tokbench.quantize import VectorQuantizer
from tokbench.tokenizer import Tokenizer
from tokbench.tokens import TokenLayout, Tokens


class SharedResidualQuantizer(torch.nn.Module):
    """``depth`` nearest-code searches over one codebook, each on the residual of the previous."""

    def __init__(self, codebook_size: int, code_dim: int, depth: int) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth = depth
        self.vq = VectorQuantizer(codebook_size, code_dim)

    @property
    def codebook_size(self) -> int:
        return self.vq.codebook_size

    def codebooks(self) -> list[VectorQuantizer]:
        """The one codebook every depth searches (what ids index)."""
        return [self.vq]

    def ids(self, z_NC: torch.Tensor) -> torch.Tensor:
        """Codes ``(N, depth)`` of vectors ``(N, code_dim)``."""
        residual_NC = z_NC.float()
        ids = []
        for _ in range(self.depth):
            idx_N = self.vq.search(residual_NC)
            residual_NC = residual_NC - self.vq.lookup(idx_N, channel_dim=-1)
            ids.append(idx_N)
        return torch.stack(ids, dim=-1)

    def lookup(self, ids_ND: torch.Tensor) -> torch.Tensor:
        """The quantized vectors ``(..., code_dim)``: the sum of each row's ``depth`` codes."""
        return self.vq.lookup(ids_ND, channel_dim=-1).sum(dim=-2)


class RQVAETokenizer(Tokenizer):
    """Images -> ``(H/stride) * (W/stride) * depth`` ids (a ``sequence``, depth innermost).

    ``ch``/``ch_mult``/``num_res_blocks``/``z_channels``/``attn_levels`` size the conv encoder and
    decoder (attention after every ResNet block of the listed levels, 0 = full resolution);
    ``codebook_size`` codes of ``code_dim`` dimensions, searched ``depth`` times per position.
    """

    family, kind = "rqvae", "discrete"

    def __init__(self, ch: int = 128, ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4), num_res_blocks: int = 2,
                 z_channels: int = 256, attn_levels: tuple[int, ...] = (5,), codebook_size: int = 16384,
                 code_dim: int = 256, depth: int = 4) -> None:
        super().__init__()
        ch_mult, attn_levels = tuple(int(m) for m in ch_mult), tuple(int(a) for a in attn_levels)
        self.config = dict(ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks, z_channels=z_channels,
                           attn_levels=list(attn_levels), codebook_size=codebook_size, code_dim=code_dim, depth=depth)
        self.stride, self.depth = stride_of(ch_mult), depth
        self.encoder = ConvEncoder(ch, ch_mult, num_res_blocks, z_channels, attn_levels=attn_levels)
        self.quant_conv = torch.nn.Conv2d(z_channels, code_dim, 1)
        self.quantize = SharedResidualQuantizer(codebook_size, code_dim, depth)
        self.post_quant_conv = torch.nn.Conv2d(code_dim, z_channels, 1)
        self.decoder = ConvDecoder(ch, ch_mult, num_res_blocks, z_channels, attn_levels=attn_levels)

    def layout_for(self, height: int, width: int) -> TokenLayout:
        h, w = math.ceil(height / self.stride), math.ceil(width / self.stride)
        return TokenLayout("sequence", (h * w * self.depth,), vocab_size=self.quantize.codebook_size)

    def features(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """Pre-quantization features ``(B, code_dim, h, w)`` (upstream's ``encode``, channels first)."""
        return self.quant_conv(self.encoder(to_model_range(x_B3HW)))

    def codes(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """Upstream's ``get_codes`` layout, ``(B, h, w, depth)``, of images in ``[0, 1]``."""
        f_BhwC = self.features(x_B3HW).permute(0, 2, 3, 1)
        return self.quantize.ids(f_BhwC.reshape(-1, f_BhwC.shape[-1])).view(*f_BhwC.shape[:3], self.depth)

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        codes_BhwD = self.codes(x_B3HW)
        return Tokens(self.layout_for(*x_B3HW.shape[-2:]), ids=codes_BhwD.reshape(codes_BhwD.shape[0], -1))

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        H, W = tokens.image_size
        h, w = math.ceil(H / self.stride), math.ceil(W / self.stride)
        B, K = tokens.ids.shape
        if K != h * w * self.depth:
            raise ValueError(f"RQ-VAE decodes {self.depth} ids per position of the {h}x{w} grid of a {H}x{W} "
                             f"image ({h * w * self.depth} ids); got {K}")
        K_codes = self.quantize.codebook_size
        if int(tokens.ids.min()) < 0 or int(tokens.ids.max()) >= K_codes:
            raise ValueError(f"RQ-VAE ids index a codebook of {K_codes} codes (0..{K_codes - 1}); got ids in "
                             f"{int(tokens.ids.min())}..{int(tokens.ids.max())}")
        zq_BhwC = self.quantize.lookup(tokens.ids.view(B, h, w, self.depth))
        return from_model_range(self.decoder(self.post_quant_conv(zq_BhwC.permute(0, 3, 1, 2))))
