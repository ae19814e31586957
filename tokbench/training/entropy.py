"""Codebook entropy regularizer (MAGVIT-2 / GigaTok style) for every codebook tokenizer.

Soft assignments ``q(z) = softmax(-|z - c_k|^2 / T)`` over the codebook; the loss is the
mean per-vector entropy (pushes each vector towards one code) minus the entropy of the
batch-average assignment (pushes the batch to spread over all codes). It needs the vectors
each codebook is searched with: every quantizer searches through `VectorQuantizer.assign`,
which shows them to the codebook's observers in training, so this works the same for the
2D VQ, the multi-scale residual (one call per scale) and the 1D families, and no tokenizer
has to know about this loss. Memory: one ``N x K`` matrix per search.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tokbench.quantize import ImplicitQuantizer, VectorQuantizer


def entropy_loss(z_ND: torch.Tensor, codebook_KD: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-vector entropy minus batch-average entropy of the soft code assignments."""
    d_NK = (z_ND.square().sum(1, keepdim=True) - 2 * z_ND @ codebook_KD.t()
            + codebook_KD.square().sum(1)[None, :])
    logp_NK = F.log_softmax(-d_NK / temperature, dim=1)
    p_NK = logp_NK.exp()
    per_vector = -(p_NK * logp_NK).sum(1).mean()
    avg_K = p_NK.mean(0)
    codebook = -(avg_K * torch.log(avg_K.clamp_min(1e-12))).sum()
    return per_vector - codebook


class CodebookEntropy:
    """Records the vectors every codebook of ``tokenizer`` is searched with in training;
    `pop_loss` turns them into the entropy loss (mean over searches)."""

    def __init__(self, tokenizer: nn.Module, temperature: float = 0.01) -> None:
        self.temperature = temperature
        self.codebooks = [m for m in tokenizer.modules() if isinstance(m, VectorQuantizer)]
        if not self.codebooks:
            if any(isinstance(m, ImplicitQuantizer) for m in tokenizer.modules()):
                raise ValueError("model.entropy_weight > 0 needs a searched codebook; LFQ/BSQ carry their own "
                                 "entropy term (set model.tokenizer_options.quantizer_options.entropy_weight) "
                                 "and FSQ needs none: set model.entropy_weight 0")
            raise ValueError(f"model.entropy_weight > 0 needs a codebook, but {type(tokenizer).__name__} has none "
                             "(set model.entropy_weight 0 for continuous tokenizers)")
        self._recorded: list[tuple[VectorQuantizer, torch.Tensor]] = []
        for codebook in self.codebooks:
            codebook.observers.append(self._record)

    def _record(self, codebook: VectorQuantizer, z_ND: torch.Tensor) -> None:
        self._recorded.append((codebook, z_ND))

    def pop_loss(self) -> torch.Tensor:
        """The loss of everything recorded since the last call; clears the record."""
        recorded, self._recorded = self._recorded, []
        if not recorded:
            raise RuntimeError("model.entropy_weight > 0, but no codebook was searched in this training step")
        losses = [entropy_loss(z_ND, q.codebook(), self.temperature) for q, z_ND in recorded]
        return torch.stack(losses).mean()
