"""PSNR on 8-bit images, the one metric core needs itself (the tasks own the rest)."""
from __future__ import annotations

import torch

PSNR_CAP_DB = 100.0  # identical images: infinite PSNR, reported as this cap


def psnr_8bit(x_B3HW: torch.Tensor, y_B3HW: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of two ``[0, 1]`` batches after rounding both to 8 bits."""
    a = x_B3HW.clamp(0, 1).mul(255).round().double()
    b = y_B3HW.clamp(0, 1).mul(255).round().double()
    mse = (a - b).square().flatten(1).mean(1)
    psnr = 10 * torch.log10(255.0**2 / mse.clamp_min(1e-300))
    return psnr.clamp(max=PSNR_CAP_DB).float()
