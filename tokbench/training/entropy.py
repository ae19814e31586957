"""Codebook entropy regularizer (MAGVIT-2 / GigaTok style) for `VectorQuantizer`-based tokenizers.

Soft assignments ``q(z) = softmax(-|z - c_k|^2 / T)`` over the codebook; the loss is the
mean per-vector entropy (pushes each vector towards one code) minus the entropy of the
batch-average assignment (pushes the batch to spread over all codes). It needs the
quantizer's input vectors, which forward hooks capture while the tokenizer trains, so no
tokenizer has to know about this loss. Memory: one ``N x K`` matrix per quantizer call.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tokbench.quantize import VectorQuantizer


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
    """Records every `VectorQuantizer` input of ``tokenizer`` in training mode; `pop_loss`
    turns the recorded vectors into the entropy loss (mean over quantizer calls)."""

    def __init__(self, tokenizer: nn.Module, temperature: float = 0.01) -> None:
        self.temperature = temperature
        self.quantizers = [m for m in tokenizer.modules() if isinstance(m, VectorQuantizer)]
        if not self.quantizers:
            raise ValueError(f"model.entropy_weight > 0 needs a codebook, but {type(tokenizer).__name__} has no "
                             "VectorQuantizer (set model.entropy_weight 0 for continuous tokenizers)")
        self._recorded: list[tuple[VectorQuantizer, torch.Tensor]] = []
        for q in self.quantizers:
            q.register_forward_hook(self._record, with_kwargs=True)

    def _record(self, module: VectorQuantizer, args: tuple, kwargs: dict, output) -> None:
        if not module.training:
            return
        z = args[0]
        channel_dim = kwargs.get("channel_dim", args[1] if len(args) > 1 else 1)
        z_ND = module.prepare(z.movedim(channel_dim, -1).reshape(-1, module.code_dim).float())
        self._recorded.append((module, z_ND))

    def pop_loss(self) -> torch.Tensor:
        """The loss of everything recorded since the last call; clears the record."""
        recorded, self._recorded = self._recorded, []
        if not recorded:
            raise RuntimeError("model.entropy_weight > 0, but no VectorQuantizer.forward ran in this training step "
                               "(this tokenizer searches its codebook another way; set model.entropy_weight 0)")
        losses = [entropy_loss(z_ND, q.codebook(), self.temperature) for q, z_ND in recorded]
        return torch.stack(losses).mean()
