"""FSQ: finite scalar quantization (Mentzer et al., "Finite Scalar Quantization: VQ-VAE
Made Simple", 2023).

Channel ``i`` is bounded to ``L_i`` levels, ``f(z) = tanh(z + s) * h - o`` with
``h = (L - 1)(1 + 1e-3) / 2``, ``o = 0.5`` for even ``L`` (else 0) and ``s = atanh(o / h)``,
then rounded (straight-through) and divided by ``L // 2``: odd ``L`` gives the symmetric
values ``-1 .. 1``, even ``L`` the values ``-1 .. 1 - 2/L``. No commitment or entropy loss.

**Id layout**: level index ``k_i = round(code_i * (L_i // 2)) + L_i // 2`` in ``0 .. L_i - 1``,
``id = sum_i k_i * prod_{j < i} L_j`` -- channel 0 varies fastest (mixed radix, as the
paper's reference code). ``codebook_size = prod L_i``, ``code_dim = len(levels)``.
"""
from __future__ import annotations

import math

import torch

from tokbench.quantize.implicit import ImplicitQuantizer

BOUND_EPS = 1e-3


class FiniteScalarQuantizer(ImplicitQuantizer):
    """FSQ over ``levels`` (one entry per channel, each >= 2); ``beta`` > 0 adds a
    commitment loss, which the paper does not use."""

    def __init__(self, levels: tuple[int, ...] | list[int], *, beta: float = 0.0) -> None:
        levels = tuple(int(n) for n in levels)
        if not levels or any(n < 2 for n in levels):
            raise ValueError(f"FSQ levels must be a non-empty list of integers >= 2, got {list(levels)}")
        super().__init__(math.prod(levels), len(levels), beta=beta)
        self.levels = levels
        levels_D = torch.tensor(levels, dtype=torch.long)
        basis_D = torch.cumprod(torch.tensor((1,) + levels[:-1], dtype=torch.long), 0)
        half_l = (levels_D.double() - 1) * (1 + BOUND_EPS) / 2
        offset = (levels_D % 2 == 0).double() * 0.5
        self.register_buffer("levels_D", levels_D, persistent=False)
        self.register_buffer("basis_D", basis_D, persistent=False)
        self.register_buffer("half_width_D", (levels_D // 2).float(), persistent=False)
        self.register_buffer("half_l_D", half_l.float(), persistent=False)
        self.register_buffer("offset_D", offset.float(), persistent=False)
        self.register_buffer("shift_D", torch.atanh(offset / half_l).float(), persistent=False)

    def prepare(self, z_ND: torch.Tensor) -> torch.Tensor:
        """Bounded features divided by ``L // 2``: the space the codes live in."""
        bounded = torch.tanh(z_ND + self.shift_D) * self.half_l_D - self.offset_D
        return bounded / self.half_width_D

    def round(self, z_ND: torch.Tensor) -> torch.Tensor:
        return torch.round(z_ND * self.half_width_D) / self.half_width_D

    def ids_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        k = torch.round(codes * self.half_width_D).long() + self.half_width_D.long()
        return (k * self.basis_D).sum(-1)

    def codes_from_ids(self, ids: torch.Tensor) -> torch.Tensor:
        k = (ids.long().unsqueeze(-1) // self.basis_D) % self.levels_D
        return (k - self.half_width_D.long()).float() / self.half_width_D

    def extra_repr(self) -> str:
        return f"levels={list(self.levels)}, codebook_size={self.codebook_size}, beta={self.beta}"
