"""Exponential moving average of a module's weights (buffers copied as they are)."""
from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(module: nn.Module) -> nn.Module:
    ema = copy.deepcopy(module).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, module: nn.Module, decay: float) -> None:
    ema_params = [p for p in ema.parameters()]
    params = [p.detach() for p in module.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), module.buffers()):
        b_ema.copy_(b)
