"""`VectorQuantizer`: one codebook, nearest-code lookup, straight-through gradients.

Options follow the reference tokenizers: low-dimensional l2-normalized codes (LlamaGen,
TiTok), commitment loss with ``beta`` on the encoder side and a codebook loss on the code
side -- or, with ``use_ema``, codebook updates by exponential moving averages instead
(VQ-VAE-2 style). Codes unused for ``dead_code_steps`` training steps are restarted from
random encoder outputs of the current batch. Every statistic is reduced across DDP ranks
and restarts are chosen on rank 0 and broadcast, so N ranks behave like one process
with the global batch.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tokbench import distributed
from tokbench.ops import nearest_codeword
from tokbench.quantize.base import Quantizer
from tokbench.quantize.output import QuantizerOutput
from tokbench.quantize.usage import CodeUsage

Observer = Callable[["VectorQuantizer", torch.Tensor], None]
# "l2": the nearest codeword; "inner_product": the codeword of largest <z, e> (IBQ's index,
# which differs from l2's wherever code norms differ).
SEARCHES = ("l2", "inner_product")


class VectorQuantizer(Quantizer, CodeUsage):
    """Nearest-codeword quantizer over ``codebook_size`` codes of ``code_dim`` dimensions."""

    def __init__(
        self,
        codebook_size: int,
        code_dim: int,
        *,
        l2_normalize: bool = False,
        beta: float = 0.25,
        use_ema: bool = False,
        ema_decay: float = 0.99,
        dead_code_steps: int = 0,
        usage_window: int = 100,
        search: str = "l2",
    ) -> None:
        super().__init__()
        if codebook_size < 1 or code_dim < 1:
            raise ValueError(f"codebook_size and code_dim must be >= 1, got {codebook_size} and {code_dim}")
        if search not in SEARCHES:
            raise ValueError(f"search must be one of {', '.join(SEARCHES)}, got {search!r}")
        self.search_by = search
        self.code_dim = code_dim
        self.l2_normalize, self.beta = l2_normalize, beta
        self.use_ema, self.ema_decay = use_ema, ema_decay
        self.dead_code_steps = dead_code_steps
        self.embedding = nn.Parameter(torch.empty(codebook_size, code_dim), requires_grad=not use_ema)
        # Training-time bookkeeping (buffers: saved in checkpoints, follow .to(device)).
        self.init_usage(codebook_size, ema_decay, usage_window)
        # Restarts are kept apart from hits: a restarted code is not a used one.
        self.register_buffer("last_restart_step", torch.zeros(codebook_size, dtype=torch.long))
        if use_ema:
            self.register_buffer("ema_cluster_size", torch.zeros(codebook_size))
            self.register_buffer("ema_embed_sum", torch.zeros(codebook_size, code_dim))
        # Called with (self, z_ND) on every training-time search (e.g. the codebook entropy loss).
        self.observers: list[Observer] = []
        self.reset_parameters()

    def codebooks(self) -> list["VectorQuantizer"]:
        return [self]

    def reset_parameters(self) -> None:
        if self.embedding.device.type == "meta":
            return
        with torch.no_grad():
            if self.l2_normalize:
                self.embedding.normal_()
            else:
                self.embedding.uniform_(-1.0 / self.codebook_size, 1.0 / self.codebook_size)
            if self.use_ema:
                self.ema_embed_sum.copy_(self.embedding)
                self.ema_cluster_size.fill_(1.0)

    # -- lookup and search ---------------------------------------------------------
    def codebook(self) -> torch.Tensor:
        """The effective codewords ``(K, D)`` (l2-normalized when configured)."""
        return F.normalize(self.embedding, dim=1) if self.l2_normalize else self.embedding

    def prepare(self, z_ND: torch.Tensor) -> torch.Tensor:
        """Encoder vectors in the space the codes live in."""
        return F.normalize(z_ND, dim=1) if self.l2_normalize else z_ND

    def search(self, z_ND: torch.Tensor) -> torch.Tensor:
        """Indices ``(N,)`` of the nearest codewords of already-prepared vectors (or, with
        ``search="inner_product"``, of the largest inner products, IBQ's choice)."""
        if self.search_by == "inner_product":
            return (z_ND @ self.codebook().t()).argmax(dim=1)
        idx_N, _ = nearest_codeword(z_ND, self.codebook(), metric="l2")
        return idx_N

    def assign(self, z_ND: torch.Tensor) -> torch.Tensor:
        """Nearest codes of prepared vectors; in training also the bookkeeping (observers, hit
        counts, EMA update, dead-code restarts). Every quantizer searches through this."""
        idx_N = self.search(z_ND)
        if self.training:
            for observe in self.observers:
                observe(self, z_ND)
            self.record_hits(idx_N)
            if self.use_ema:
                self.ema_update(z_ND.detach(), idx_N)
            self.restart_dead_codes(z_ND.detach())
        return idx_N

    def lookup(self, ids: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
        """Codewords for ``ids``; the code dimension is inserted at ``channel_dim``."""
        vectors = F.embedding(ids, self.codebook())  # (*ids.shape, D)
        return vectors.movedim(-1, channel_dim) if channel_dim != -1 else vectors

    # -- forward ---------------------------------------------------------------------
    def forward(self, z: torch.Tensor, channel_dim: int = 1) -> QuantizerOutput:
        """Quantize ``z`` whose code dimension is ``channel_dim`` (e.g. ``(B, C, h, w)``, dim 1)."""
        z_ND, ids_shape = self.rows(z, channel_dim)
        idx_N = self.assign(z_ND)
        zq_ND = F.embedding(idx_N, self.codebook())
        losses = {"commitment": self.beta * F.mse_loss(z_ND, zq_ND.detach())}
        if not self.use_ema:
            losses["codebook"] = F.mse_loss(zq_ND, z_ND.detach())
        return self.straight_through(z, z_ND, zq_ND, idx_N, ids_shape, channel_dim, losses)

    # -- EMA, restarts (hit counts and usage: `CodeUsage`) ------------------------------------
    @torch.no_grad()
    def ema_update(self, z_ND: torch.Tensor, idx_N: torch.Tensor) -> None:
        onehot_sum = torch.zeros_like(self.ema_embed_sum).index_add_(0, idx_N, z_ND.float())
        counts_K = torch.bincount(idx_N, minlength=self.codebook_size).float()
        distributed.all_reduce_sum(onehot_sum)
        distributed.all_reduce_sum(counts_K)
        d = self.ema_decay
        self.ema_cluster_size.mul_(d).add_(counts_K, alpha=1 - d)
        self.ema_embed_sum.mul_(d).add_(onehot_sum, alpha=1 - d)
        # Laplace smoothing keeps rarely used codes from dividing by ~0.
        n = self.ema_cluster_size.sum()
        size = (self.ema_cluster_size + 1e-5) / (n + self.codebook_size * 1e-5) * n
        self.embedding.copy_(self.ema_embed_sum / size.unsqueeze(1))

    @torch.no_grad()
    def restart_dead_codes(self, z_ND: torch.Tensor) -> int:
        """Re-initialize codes unused for ``dead_code_steps`` steps from random batch vectors."""
        if self.dead_code_steps <= 0 or self.step < self.dead_code_steps:
            return 0
        dead_K = (self.step - torch.maximum(self.last_hit_step, self.last_restart_step)) >= self.dead_code_steps
        n_dead = int(dead_K.sum())
        if n_dead == 0 or z_ND.shape[0] == 0:
            return 0
        # Every rank draws from the gathered batch with rank 0's choice, so codebooks stay identical.
        pool = distributed.all_gather_cat(z_ND[: min(z_ND.shape[0], 4096)].contiguous())
        pick = torch.randint(0, pool.shape[0], (n_dead,), device=pool.device)
        distributed.broadcast_from_rank0(pick)
        fresh = pool[pick]
        self.embedding[dead_K] = fresh
        if self.use_ema:
            self.ema_embed_sum[dead_K] = fresh
            self.ema_cluster_size[dead_K] = 1.0
        self.last_restart_step[dead_K] = self.step
        return n_dead

    @property
    def bits_per_code(self) -> float:
        return math.log2(self.codebook_size)

    def extra_repr(self) -> str:
        return (f"codebook_size={self.codebook_size}, code_dim={self.code_dim}, l2_normalize={self.l2_normalize}, "
                f"beta={self.beta}, use_ema={self.use_ema}, dead_code_steps={self.dead_code_steps}")
