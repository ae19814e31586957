"""Detail measures that see fine structure where PSNR does not.

* Band energy ratio: the radially binned power spectrum of the reconstruction over that of
  the original, in ``NUM_BANDS`` equal bands from 0 to 0.5 cycles/pixel (mean removed, Hann
  window against edge leakage). Below 1: detail lost (blur); above 1: energy added (ringing,
  blocking, aliasing). Per image, bands holding less than ``MIN_BAND_SHARE`` of the
  original's energy are not scored (NaN); the scalar `energy_kept` caps each scored band at 1
  -- added energy does not make up for lost detail -- and averages over them.
  Over a dataset (`pooled_band_ratios`) each band's ratio is a ratio of sums: the
  reconstructions' energy in the band summed over the images (per pixel, so image size does
  not weigh) over the originals'. A band where the originals together hold less than
  ``MIN_BAND_SHARE`` of their total energy is excluded and counted, so every reported ratio is
  at most ``(reconstructions' total energy) / (MIN_BAND_SHARE x originals' total energy)``,
  never a division by a nearly empty band (a mean of per-image ratios is not bounded: one
  image with next to no energy in a band dominates it). The interval is the ratio
  estimator's delta-method (t) interval over images: deterministic, like `mean_ci95`.
* Modulation of a grating of known frequency/orientation: the amplitude of that sinusoid in
  the reconstruction over its amplitude in the original (a modulation-transfer value).
* Edge F1: Canny edges (scikit-image, sigma 1) of original and reconstruction matched with a
  1-pixel tolerance.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, stats
from skimage.feature import canny

NUM_BANDS = 8
MIN_BAND_SHARE = 0.01  # bands with less of the original's energy are not scored


def gray(image_HW3: np.ndarray) -> np.ndarray:
    """Luma (BT.601) in [0, 1]."""
    rgb = image_HW3.astype(np.float64) / 255.0
    return rgb @ np.array([0.299, 0.587, 0.114])


def band_energies(gray_HW: np.ndarray, num_bands: int = NUM_BANDS) -> np.ndarray:
    H, W = gray_HW.shape
    window = np.outer(np.hanning(H), np.hanning(W))
    power = np.abs(np.fft.fft2((gray_HW - gray_HW.mean()) * window)) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(H), np.fft.fftfreq(W), indexing="ij")
    radius = np.hypot(fx, fy)
    edges = np.linspace(0.0, 0.5, num_bands + 1)
    band = np.clip(np.digitize(radius, edges) - 1, 0, num_bands - 1)
    inside = radius <= 0.5
    return np.bincount(band[inside], weights=power[inside], minlength=num_bands)


def band_energies_per_pixel(image_HW3: np.ndarray) -> np.ndarray:
    """``band_energies`` of the image's luma divided by its pixel count (what `pooled_band_ratios` sums)."""
    g = gray(image_HW3)
    return band_energies(g) / g.size


def pooled_band_ratios(original_NB: np.ndarray, reconstruction_NB: np.ndarray,
                       min_share: float = MIN_BAND_SHARE) -> list[dict]:
    """Per band: ``{"ratio", "ci95", "n", "excluded"}`` -- the ratio of the band's energy summed
    over images (see the module docstring); ``ratio`` is None for an excluded band."""
    x_NB = np.asarray(original_NB, dtype=np.float64)
    y_NB = np.asarray(reconstruction_NB, dtype=np.float64)
    n = x_NB.shape[0]
    sum_x, sum_y = x_NB.sum(0), y_NB.sum(0)
    out = []
    for b in range(x_NB.shape[1]):
        if n == 0 or sum_x[b] < min_share * max(sum_x.sum(), 1e-300):
            out.append({"ratio": None, "ci95": [None, None], "n": n, "excluded": True})
            continue
        ratio = float(sum_y[b] / sum_x[b])
        lo = hi = ratio
        if n > 1:  # delta method: se(R) = sqrt(sum((y - R x)^2) / (n - 1)) / (sqrt(n) * mean(x))
            residual = y_NB[:, b] - ratio * x_NB[:, b]
            se = math.sqrt(float((residual**2).sum()) / (n - 1)) / (math.sqrt(n) * float(x_NB[:, b].mean()))
            half = float(stats.t.ppf(0.975, n - 1)) * se
            lo, hi = max(0.0, ratio - half), ratio + half
        out.append({"ratio": ratio, "ci95": [lo, hi], "n": n, "excluded": False})
    return out


def band_energy_ratios(original_HW3: np.ndarray, reconstruction_HW3: np.ndarray) -> np.ndarray:
    """Per band ratio (NaN where the original has no energy)."""
    e_orig = band_energies(gray(original_HW3))
    e_rec = band_energies(gray(reconstruction_HW3))
    valid = e_orig >= MIN_BAND_SHARE * max(e_orig.sum(), 1e-12)
    return np.where(valid, e_rec / np.where(valid, e_orig, 1.0), np.nan)


def energy_kept(band_ratios: np.ndarray) -> float:
    """Mean over scored bands of ``min(ratio, 1)``: the share of the original's detail kept."""
    valid = band_ratios[np.isfinite(band_ratios)]
    return float(np.minimum(valid, 1.0).mean()) if valid.size else float("nan")


def grating_amplitude(gray_HW: np.ndarray, frequency: float, orientation_deg: float) -> float:
    H, W = gray_HW.shape
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    t = np.deg2rad(orientation_deg)
    phase = 2 * np.pi * frequency * (x * np.cos(t) + y * np.sin(t))
    centred = gray_HW - gray_HW.mean()
    return float(2 * np.abs(np.sum(centred * np.exp(-1j * phase))) / centred.size)


def modulation_ratio(original_HW3: np.ndarray, reconstruction_HW3: np.ndarray, frequency: float,
                     orientation_deg: float) -> float:
    a_orig = grating_amplitude(gray(original_HW3), frequency, orientation_deg)
    return grating_amplitude(gray(reconstruction_HW3), frequency, orientation_deg) / max(a_orig, 1e-12)


def resolved_frequency(modulations: dict[float, float], threshold: float = 0.5) -> float:
    """Highest frequency whose modulation (and that of every lower one) stays >= threshold; 0 if none."""
    best = 0.0
    for f in sorted(modulations):
        if modulations[f] < threshold:
            break
        best = f
    return best


def edge_f1(original_HW3: np.ndarray, reconstruction_HW3: np.ndarray, tolerance: int = 1) -> float:
    e_orig = canny(gray(original_HW3), sigma=1.0)
    e_rec = canny(gray(reconstruction_HW3), sigma=1.0)
    if not e_orig.any() and not e_rec.any():
        return 1.0
    if not e_orig.any() or not e_rec.any():
        return 0.0
    grow = np.ones((2 * tolerance + 1, 2 * tolerance + 1), bool)
    precision = (e_rec & ndimage.binary_dilation(e_orig, grow)).sum() / e_rec.sum()
    recall = (e_orig & ndimage.binary_dilation(e_rec, grow)).sum() / e_orig.sum()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))
