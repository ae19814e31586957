"""What every quantizer's forward returns."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class QuantizerOutput:
    """``z_q``: quantized features with straight-through gradients (same shape as the input);
    ``ids``: code indices (a tensor, or a list of per-scale maps); ``losses``: weighted loss
    terms to add to the objective; ``stats``: detached numbers for logging."""

    z_q: torch.Tensor
    ids: torch.Tensor | list[torch.Tensor]
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
