"""1D holistic tokenizer (TiTok / Hita style).

A ViT encoder reads the patch grid together with ``num_tokens`` learnable latent tokens;
only the latent tokens leave the encoder, so the image becomes a 1D sequence of K ids
whatever its size. A ViT decoder reads mask tokens over the patch grid plus the quantized
latents and predicts the patches. Trained with nested (tail) dropout -- a random suffix of
the K tokens replaced by a learned null token -- so that decoding from the first k tokens
(`decode_prefix`) gives a coarse image that sharpens as k grows.
"""
from __future__ import annotations

import torch
from torch import nn

from tokbench.nn.vit import GridPositions, Transformer, patchify, unpatchify
from tokbench.quantize import VectorQuantizer
from tokbench.tokenizer import AutoencoderOutput, Tokenizer
from tokbench.tokens import TokenLayout, Tokens


class Holistic1DTokenizer(Tokenizer):
    """Images -> a sequence of ``num_tokens`` ids, independent of the image size."""

    family, kind = "holistic_1d", "discrete"

    def __init__(self, patch_size: int = 16, width: int = 512, depth: int = 8, heads: int = 8,
                 num_tokens: int = 128, codebook_size: int = 4096, code_dim: int = 12, base_grid: int = 16,
                 beta: float = 0.25, tail_drop_prob: float = 0.5, dead_code_steps: int = 0) -> None:
        super().__init__()
        self.config = dict(patch_size=patch_size, width=width, depth=depth, heads=heads, num_tokens=num_tokens,
                           codebook_size=codebook_size, code_dim=code_dim, base_grid=base_grid, beta=beta,
                           tail_drop_prob=tail_drop_prob, dead_code_steps=dead_code_steps)
        self.stride, self.num_tokens, self.tail_drop_prob = patch_size, num_tokens, tail_drop_prob
        pixels = 3 * patch_size * patch_size
        # encoder
        self.patch_embed = nn.Linear(pixels, width)
        self.enc_pos = GridPositions(base_grid, width)
        self.latent_tokens = nn.Parameter(torch.randn(num_tokens, width) * 0.02)
        self.encoder = Transformer(width, depth, heads)
        self.to_code = nn.Linear(width, code_dim)
        self.quantize = VectorQuantizer(codebook_size, code_dim, l2_normalize=True, beta=beta,
                                        dead_code_steps=dead_code_steps)
        # decoder
        self.from_code = nn.Linear(code_dim, width)
        self.dec_latent_pos = nn.Parameter(torch.randn(num_tokens, width) * 0.02)
        self.null_token = nn.Parameter(torch.zeros(width))
        self.mask_token = nn.Parameter(torch.zeros(width))
        self.dec_pos = GridPositions(base_grid, width)
        self.decoder = Transformer(width, depth, heads)
        self.to_pixels = nn.Linear(width, pixels)

    def layout_for(self, height: int, width: int) -> TokenLayout:
        return TokenLayout("sequence", (self.num_tokens,), vocab_size=self.quantize.codebook_size)

    def latents(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """Pre-quantization latent tokens ``(B, K, code_dim)``."""
        p = self.stride
        h, w = x_B3HW.shape[-2] // p, x_B3HW.shape[-1] // p
        patches_BLC = self.patch_embed(patchify(x_B3HW, p)) + self.enc_pos(h, w)
        latent_BKC = self.latent_tokens.expand(x_B3HW.shape[0], -1, -1)
        out_BLC = self.encoder(torch.cat([patches_BLC, latent_BKC], dim=1))
        return self.to_code(out_BLC[:, -self.num_tokens:])

    def decode_latents(self, zq_BKD: torch.Tensor, hw: tuple[int, int], keep_B: torch.Tensor | None = None) -> torch.Tensor:
        """Pixels from quantized latents on an ``hw`` patch grid; tokens at positions ``>= keep_B`` are nulled."""
        B, K, _ = zq_BKD.shape
        lat_BKC = self.from_code(zq_BKD)
        if keep_B is not None:
            dropped_BK1 = (torch.arange(K, device=zq_BKD.device)[None, :] >= keep_B[:, None]).unsqueeze(-1)
            lat_BKC = torch.where(dropped_BK1, self.null_token.to(lat_BKC.dtype), lat_BKC)
        lat_BKC = lat_BKC + self.dec_latent_pos
        h, w = hw
        mask_BLC = self.mask_token.expand(B, h * w, -1) + self.dec_pos(h, w)
        out_BLC = self.decoder(torch.cat([mask_BLC, lat_BKC], dim=1))
        return unpatchify(self.to_pixels(out_BLC[:, : h * w]), self.stride, h, w)

    def _grid(self, height: int, width: int) -> tuple[int, int]:
        p = self.stride
        return -(-height // p), -(-width // p)

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        idx_BK = self.quantize(self.latents(x_B3HW), channel_dim=-1).ids
        # A 1D layout carries no grid: the decoder's patch grid comes from the padded size.
        return Tokens(self.layout_for(*x_B3HW.shape[-2:]), ids=idx_BK, extra={"padded_size": tuple(x_B3HW.shape[-2:])})

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        zq_BKD = self.quantize.lookup(tokens.ids, channel_dim=-1)
        keep = tokens.extra.get("num_tokens")
        keep_B = None if keep is None else torch.full((zq_BKD.shape[0],), int(keep), device=zq_BKD.device)
        size = tokens.extra.get("padded_size") or tokens.image_size  # sampled tokens: the size they were given
        return self.decode_latents(zq_BKD, self._grid(*size), keep_B)

    def prefix_lengths(self, layout: TokenLayout) -> tuple[int, ...]:
        """1, 2, 4, ... and K: the nested-dropout order makes every prefix decodable."""
        powers = [1 << i for i in range(self.num_tokens.bit_length()) if 1 << i < self.num_tokens]
        return (*powers, self.num_tokens)

    def decode_prefix(self, tokens: Tokens, num_tokens: int) -> torch.Tensor:
        """Decode from the first ``num_tokens`` of the K tokens (the rest replaced by the null token)."""
        if not 1 <= num_tokens <= self.num_tokens:
            raise ValueError(f"num_tokens must be in 1..{self.num_tokens}, got {num_tokens}")
        partial = Tokens(tokens.layout, tokens.image_size, ids=tokens.ids, extra={**tokens.extra, "num_tokens": num_tokens})
        return self.decode(partial)

    def autoencode(self, x_B3HW: torch.Tensor) -> AutoencoderOutput:
        q = self.quantize(self.latents(x_B3HW), channel_dim=-1)
        B = x_B3HW.shape[0]
        keep_B = None
        if self.training and self.tail_drop_prob > 0:
            # Nested dropout: with probability p keep a random prefix of 1..K tokens.
            k_B = torch.randint(1, self.num_tokens + 1, (B,), device=x_B3HW.device)
            drop_B = torch.rand(B, device=x_B3HW.device) < self.tail_drop_prob
            keep_B = torch.where(drop_B, k_B, torch.full_like(k_B, self.num_tokens))
        rec = self.decode_latents(q.z_q, self._grid(*x_B3HW.shape[-2:]), keep_B)
        return AutoencoderOutput(rec, q.losses, q.stats)

    def last_layer(self) -> torch.Tensor:
        return self.to_pixels.weight
