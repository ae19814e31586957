"""`ImplicitQuantizer`: quantizers whose codebook is a fixed grid, not a learned table.

LFQ, BSQ and FSQ round every channel on its own, so a code is found without any
nearest-codeword search and its id is computed from the rounded channels (and back) by an
exact integer map. A subclass supplies four pieces:

* ``prepare(z_ND)``: encoder vectors into the space the grid lives in (identity for LFQ,
  l2-normalisation for BSQ, the bounding ``tanh`` for FSQ);
* ``round(z_ND)``: each prepared vector's grid point (no gradient needed);
* ``ids_from_codes(codes)`` / ``codes_from_ids(ids)``: the exact id <-> grid-point maps;
* ``regularizers(z_ND)``: extra loss terms of prepared vectors (the entropy terms of LFQ and
  BSQ), already weighted; ``{}`` when there are none.

Everything else -- straight-through gradients, the commitment loss, hit counts and usage
statistics, ``assign``/``lookup`` with the same signatures as `VectorQuantizer` (so the
multi-scale residual quantizer can use either) -- lives here.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tokbench.quantize.base import Quantizer
from tokbench.quantize.output import QuantizerOutput
from tokbench.quantize.usage import CodeUsage


class ImplicitQuantizer(Quantizer, CodeUsage):
    """Base class of the search-free quantizers (see the module docstring).

    ``beta`` weighs the commitment loss ``mse(z, code)`` (0 turns it off, as FSQ has none).
    """

    def __init__(self, codebook_size: int, code_dim: int, *, beta: float = 0.25) -> None:
        super().__init__()
        if code_dim < 1:
            raise ValueError(f"code_dim must be >= 1, got {code_dim}")
        self.code_dim, self.beta = code_dim, beta
        self.init_usage(codebook_size)

    def codebooks(self) -> list:
        """No searched codebook: ids are computed, not looked up (see the module docstring)."""
        return []

    # -- what a subclass supplies ------------------------------------------------------
    def prepare(self, z_ND: torch.Tensor) -> torch.Tensor:
        return z_ND

    def round(self, z_ND: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def ids_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def codes_from_ids(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- the `VectorQuantizer`-compatible surface ------------------------------------
    def check_ids(self, ids: torch.Tensor) -> None:
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.codebook_size):
            raise ValueError(f"ids must lie in [0, {self.codebook_size}), got values in "
                             f"[{int(ids.min())}, {int(ids.max())}]")

    def assign(self, z_ND: torch.Tensor) -> torch.Tensor:
        """Ids ``(N,)`` of prepared vectors; in training also counts the hits."""
        idx_N = self.ids_from_codes(self.round(z_ND.detach()))
        if self.training:
            self.record_hits(idx_N)
        return idx_N

    def lookup(self, ids: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
        """Grid points for ``ids``; the code dimension is inserted at ``channel_dim``."""
        self.check_ids(ids)
        vectors = self.codes_from_ids(ids)
        return vectors.movedim(-1, channel_dim) if channel_dim != -1 else vectors

    def forward(self, z: torch.Tensor, channel_dim: int = 1) -> QuantizerOutput:
        """Quantize ``z`` whose code dimension is ``channel_dim`` (e.g. ``(B, C, h, w)``, dim 1)."""
        z_ND, ids_shape = self.rows(z, channel_dim)
        zq_ND = self.round(z_ND.detach())
        idx_N = self.ids_from_codes(zq_ND)
        losses: dict[str, torch.Tensor] = {}
        if self.training:
            self.record_hits(idx_N)
            if self.beta:
                losses["commitment"] = self.beta * F.mse_loss(z_ND, zq_ND)
            losses.update(self.regularizers(z_ND))
        return self.straight_through(z, z_ND, zq_ND, idx_N, ids_shape, channel_dim, losses)

    @property
    def bits_per_code(self) -> float:
        return math.log2(self.codebook_size)
