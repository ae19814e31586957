"""The quantizer contract every tokenizer family relies on.

A `Quantizer` maps encoder features to codes and back:

* ``forward(z) -> QuantizerOutput``: quantized features with straight-through gradients,
  the ids, the losses under the names in `LOSS_NAMES` (``codebook`` moves the codes, absent
  when codes are EMA-updated; ``commitment`` moves the encoder, weighted by ``beta``) and
  the statistics ``usage`` and ``perplexity``;
* ``codebooks()``: the `VectorQuantizer` codebooks it searches. Every search goes through
  `VectorQuantizer.assign`, which in training counts hits (reduced over ranks), EMA-updates,
  restarts dead codes and shows the searched vectors to the codebook's ``observers`` -- the
  hook the codebook entropy loss uses, whatever the quantizer around the codebook.

The search-free quantizers (`ImplicitQuantizer`: LFQ, BSQ, FSQ) round each channel on its
own, so they need no nearest-codeword search: ``codebooks()`` is empty, nothing is
observed, and their ids come from exact integer maps of the rounded channels
(``ids_from_codes`` / ``codes_from_ids``). They offer the same ``prepare`` / ``assign`` /
``lookup`` / ``usage_stats`` as `VectorQuantizer` (hits counted the same way, `CodeUsage`),
so a quantizer built on codes (the multi-scale residual one) takes either. Their losses use
the same names: ``commitment`` (weighted by ``beta``; FSQ has none by default) and
``entropy`` (LFQ/BSQ's own entropy regularizer, already weighted) -- each quantizer reports
the subset of `LOSS_NAMES` it has, and only in training for the search-free ones.
"""
from __future__ import annotations

import torch
from torch import nn

from tokbench.quantize.output import QuantizerOutput

LOSS_NAMES = ("codebook", "commitment", "entropy")


class Quantizer(nn.Module):
    """Base class of quantizers (see the module docstring)."""

    def codebooks(self) -> list:
        """The `VectorQuantizer` codebooks this quantizer searches."""
        raise NotImplementedError

    has_regularizers = False  # True where `regularizers` returns loss terms

    def regularizers(self, z_ND: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra weighted loss terms of prepared vectors ``(N, D)`` (the LFQ/BSQ entropy); none here."""
        return {}

    # -- shared by the single-codebook quantizers' forward ------------------------------
    def rows(self, z: torch.Tensor, channel_dim: int) -> tuple[torch.Tensor, torch.Size]:
        """``z`` (code dimension at ``channel_dim``) as prepared fp32 rows ``(N, D)``, and the ids' shape."""
        if z.shape[channel_dim] != self.code_dim:
            raise ValueError(f"expected {self.code_dim} channels in dim {channel_dim}, got shape {tuple(z.shape)}")
        z_last = z.movedim(channel_dim, -1)
        return self.prepare(z_last.reshape(-1, self.code_dim).float()), z_last.shape[:-1]

    def straight_through(self, z: torch.Tensor, z_ND: torch.Tensor, zq_ND: torch.Tensor, idx_N: torch.Tensor,
                         ids_shape: torch.Size, channel_dim: int, losses: dict[str, torch.Tensor]) -> QuantizerOutput:
        """The output: codes with the straight-through gradient, back in ``z``'s layout and dtype."""
        zq_ND = z_ND + (zq_ND - z_ND).detach()
        z_q = zq_ND.reshape(*ids_shape, self.code_dim).movedim(-1, channel_dim).to(z.dtype)
        return QuantizerOutput(z_q=z_q, ids=idx_N.reshape(ids_shape), losses=losses, stats=self.usage_stats())
