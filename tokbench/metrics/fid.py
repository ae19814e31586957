"""Reconstruction FID (rFID): Fréchet distance between Inception-v3 pool features of the
originals and of the reconstructions.

Features come from torch-fidelity's port of the original TF Inception (2048-d pool3, the
standard for FID numbers in papers). Its weights are read from the cache / ``--weights-dir``;
the file is first opened with ``torch.load(weights_only=True)`` so that a tampered file is
refused before torch-fidelity (which unpickles freely) sees it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy import linalg

FeatureFn = Callable[[torch.Tensor], torch.Tensor]  # uint8 (B,3,H,W) -> (B, F) float


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2))``.

    ``S1 S2`` is similar to the symmetric ``S1^(1/2) S2 S1^(1/2)``, so the trace of its square
    root is the sum of the square roots of that matrix's eigenvalues: two symmetric
    eigendecompositions instead of ``scipy.linalg.sqrtm`` of a non-symmetric 2048x2048 matrix
    (seconds instead of minutes on a CPU, and no complex round-off to discard).
    """
    w1, v1 = linalg.eigh(sigma1)
    root1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
    inner = linalg.eigvalsh(root1 @ sigma2 @ root1)
    trace_covmean = float(np.sqrt(np.clip(inner, 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_covmean)


def fid_from_features(real_NF: np.ndarray, fake_NF: np.ndarray) -> float:
    real, fake = np.asarray(real_NF, np.float64), np.asarray(fake_NF, np.float64)
    return frechet_distance(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False))


def inception_feature_fn(weights_path: Path, device: str | torch.device = "cpu") -> FeatureFn:
    """The standard FID feature extractor, from a local weights file."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    torch.load(weights_path, map_location="cpu", weights_only=True)  # refuse anything but tensors
    model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                        feature_extractor_weights_path=str(weights_path)).to(device).eval()

    @torch.no_grad()
    def features(images_B3HW_uint8: torch.Tensor) -> torch.Tensor:
        return model(images_B3HW_uint8.to(device))[0].double().cpu()

    return features


def load_inception_features(weights_path: Path, device: str | torch.device = "cpu") -> FeatureFn:
    """The feature extractor of the ``rfid`` metric (see `tokbench.metrics.catalog`)."""
    return inception_feature_fn(weights_path, device)


GENERATION_FEATURES = ("2048", "logits_unbiased")
PoolAndLogitsFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # uint8 (B,3,H,W) -> (pool, logits)


def load_inception_generation_features(weights_path: Path, device: str | torch.device = "cpu") -> PoolAndLogitsFn:
    """The feature extractor of gFID / IS / precision-recall (see `tokbench.generation.scoring`):
    the same Inception as rFID, returning ``(pool features (B, 2048), bias-free logits (B, 1008))``
    for uint8 ``(B, 3, H, W)`` -- torch-fidelity's ``"2048"`` and ``"logits_unbiased"`` features,
    the ones its FID/PRC and IS use."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    torch.load(weights_path, map_location="cpu", weights_only=True)  # refuse anything but tensors
    model = FeatureExtractorInceptionV3("inception-v3-compat", list(GENERATION_FEATURES),
                                        feature_extractor_weights_path=str(weights_path)).to(device).eval()

    @torch.no_grad()
    def features(images_B3HW_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pool, logits = model(images_B3HW_uint8.to(device))
        return pool.cpu(), logits.cpu()

    features.extractor_id = (f"torch-fidelity inception-v3-compat {'+'.join(GENERATION_FEATURES)} "
                             f"{Path(weights_path).name}")
    return features
