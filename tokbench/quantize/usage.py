"""Code-usage bookkeeping shared by every quantizer: hit counts, usage window, perplexity.

Kept in buffers (saved in checkpoints, moved by ``.to(device)``) and reduced over DDP
ranks, so N ranks count like one process with the global batch.
"""
from __future__ import annotations

import torch
from torch import nn

from tokbench import distributed


class CodeUsage(nn.Module):
    """Mixin: call `init_usage` in ``__init__``, `record_hits` on every training-time
    assignment, `usage_stats` for the logged statistics."""

    codebook_size: int

    def init_usage(self, codebook_size: int, ema_decay: float = 0.99, usage_window: int = 100) -> None:
        self.codebook_size, self.usage_window = codebook_size, usage_window
        self.hit_decay = ema_decay
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("last_hit_step", torch.zeros(codebook_size, dtype=torch.long))
        self.register_buffer("hit_ema", torch.zeros(codebook_size))

    @torch.no_grad()
    def record_hits(self, idx_N: torch.Tensor) -> torch.Tensor:
        """Count code hits (summed over ranks); update the usage window and hit EMA."""
        counts_K = torch.bincount(idx_N.flatten(), minlength=self.codebook_size).float()
        distributed.all_reduce_sum(counts_K)
        self.step += 1
        self.last_hit_step[counts_K > 0] = self.step
        self.hit_ema.mul_(self.hit_decay).add_(counts_K, alpha=1 - self.hit_decay)
        return counts_K

    @torch.no_grad()
    def usage_stats(self) -> dict[str, torch.Tensor]:
        """Fraction of codes hit within the last ``usage_window`` steps, and perplexity of the hit EMA."""
        recent = (self.step - self.last_hit_step) < self.usage_window
        usage = (recent & (self.last_hit_step > 0)).float().mean()
        p = self.hit_ema / self.hit_ema.sum().clamp_min(1e-12)
        perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
        return {"usage": usage, "perplexity": perplexity}
