"""PSNR and SSIM on 8-bit images.

PSNR: per image over all RGB values, ``10 log10(255^2 / MSE)``, capped at 100 dB for
identical images (an infinity cannot be averaged or stored in JSON).

SSIM: Gaussian window (sigma 1.5, 11 taps), K1 0.01, K2 0.03, data range 255, population
covariances, mean over the valid interior (5 px border dropped) and then over channels:
exactly scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255, channel_axis=2)``. It is written here in
torch (batched, any device) because torchmetrics' SSIM treats the border differently and
differs from scikit-image by ~2e-3 on ordinary photos; the tests pin it to scikit-image.

SSIM as LlamaGen reports it (``ssim_llamagen``; LlamaGen's ``reconstruction_vq_ddp.py``):
scikit-image's ``structural_similarity`` with its defaults -- a 7 x 7 uniform window, sample
covariances (N - 1), mean over the valid interior and then over channels -- called on both
images as floats in [0, 1] but with ``data_range=2.0``, so its constants are 4x larger than
the [0, 1] range gives. It reads 0.03-0.2 higher than the Gaussian SSIM on the same pairs;
tokbench keeps the standard ``ssim`` and reports this one only where a preset reproduces
LlamaGen's table. scikit-image computes it (it is the reference), per image.
"""
from __future__ import annotations

import math

import torch

from tokbench.imageio import to_uint8
from tokbench.metrics_basic import PSNR_CAP_DB, psnr_8bit

__all__ = ["psnr_8bit", "ssim_8bit", "ssim_llamagen_8bit", "PSNR_CAP_DB", "to_8bit_levels"]

_SIGMA, _RADIUS = 1.5, 5  # scipy's truncate=3.5 at sigma 1.5 gives radius 5


def to_8bit_levels(x_B3HW: torch.Tensor) -> torch.Tensor:
    """``[0, 1]`` floats -> float64 tensors holding the 0..255 integer levels."""
    return to_uint8(x_B3HW).double()


def _gaussian_taps(dtype=torch.float64) -> torch.Tensor:
    t = torch.arange(-_RADIUS, _RADIUS + 1, dtype=dtype)
    g = torch.exp(-(t**2) / (2 * _SIGMA**2))
    return g / g.sum()


def _gaussian_blur_valid(x_BCHW: torch.Tensor) -> torch.Tensor:
    """Separable 11-tap Gaussian, 'valid' part only (the SSIM window never leaves the image).

    On CPU: scipy's ``correlate1d`` in float64 (11 multiply-adds per pixel and pass); torch's
    float64 conv2d has no optimized CPU kernel and is ~10x slower. Elsewhere: two banded
    matrix products, which every accelerator runs well.
    """
    H, W = x_BCHW.shape[-2:]
    g = _gaussian_taps(x_BCHW.dtype)
    if x_BCHW.device.type == "cpu":
        from scipy.ndimage import correlate1d

        arr = correlate1d(x_BCHW.numpy(), g.numpy(), axis=-1, mode="constant")[..., _RADIUS : W - _RADIUS]
        arr = correlate1d(arr, g.numpy(), axis=-2, mode="constant")[..., _RADIUS : H - _RADIUS, :]
        return torch.from_numpy(arr)
    band_h = torch.stack([torch.roll(torch.nn.functional.pad(g, (0, H - g.numel())), k) for k in range(H - 2 * _RADIUS)])
    band_w = torch.stack([torch.roll(torch.nn.functional.pad(g, (0, W - g.numel())), k) for k in range(W - 2 * _RADIUS)])
    return band_h.to(x_BCHW.device) @ x_BCHW @ band_w.to(x_BCHW.device).T


def ssim_8bit(x_B3HW: torch.Tensor, y_B3HW: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM ``(B,)`` of two ``[0, 1]`` batches, both rounded to 8 bits first.

    Images smaller than the 11x11 window have no valid interior: their SSIM is NaN.
    """
    a, b = to_8bit_levels(x_B3HW), to_8bit_levels(y_B3HW)
    if min(a.shape[-2:]) < 2 * _RADIUS + 1:
        return torch.full((a.shape[0],), math.nan)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = _gaussian_blur_valid(a), _gaussian_blur_valid(b)
    var_a = _gaussian_blur_valid(a * a) - mu_a**2
    var_b = _gaussian_blur_valid(b * b) - mu_b**2
    cov = _gaussian_blur_valid(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.mean(dim=(-2, -1)).mean(dim=1).float()


def ssim_llamagen_8bit(x_B3HW: torch.Tensor, y_B3HW: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM ``(B,)`` as LlamaGen computes it (see the module docstring), both rounded to
    8 bits first. Images smaller than the 7x7 window: NaN."""
    from skimage.metrics import structural_similarity

    a, b = to_8bit_levels(x_B3HW) / 255.0, to_8bit_levels(y_B3HW) / 255.0
    if min(a.shape[-2:]) < 7:
        return torch.full((a.shape[0],), math.nan)
    out = [structural_similarity(ai.permute(1, 2, 0).numpy(), bi.permute(1, 2, 0).numpy(), data_range=2.0,
                                 channel_axis=-1) for ai, bi in zip(a, b)]
    return torch.tensor(out, dtype=torch.float32)
