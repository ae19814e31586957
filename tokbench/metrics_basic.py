"""PSNR on 8-bit images, the one metric core needs itself (the tasks own the rest)."""
from __future__ import annotations

import torch

from tokbench.imageio import to_uint8

PSNR_CAP_DB = 100.0  # identical images: infinite PSNR, reported as this cap


def psnr_8bit(x_B3HW: torch.Tensor, y_B3HW: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of two ``[0, 1]`` batches after rounding both to 8 bits."""
    a, b = to_uint8(x_B3HW).double(), to_uint8(y_B3HW).double()
    mse = (a - b).square().flatten(1).mean(1)
    psnr = 10 * torch.log10(255.0**2 / mse.clamp_min(1e-300))
    return psnr.clamp(max=PSNR_CAP_DB).float()
