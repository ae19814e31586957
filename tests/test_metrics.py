"""Metrics against independent references (scikit-image, closed forms) and expected trends."""
import numpy as np
import pytest
import torch
from helpers import photo_batch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tokbench.imageio import tensor_to_uint8
from tokbench.metrics.detail import band_energy_ratios, edge_f1, energy_kept, modulation_ratio, resolved_frequency
from tokbench.metrics.fid import fid_from_features
from tokbench.metrics.image import psnr_8bit, ssim_8bit
from tokbench.metrics.perceptual import LPIPSMetric
from tokbench.metrics.stats import mean_ci95
from tokbench.metrics.text import cer, normalize_text, wer, word_scores


@pytest.fixture(scope="module")
def pairs():
    torch.manual_seed(0)
    x = photo_batch(80)
    y = (x + 0.04 * torch.randn_like(x)).clamp(0, 1)
    return x, y


def test_psnr_and_ssim_agree_with_scikit_image(pairs):
    x, y = pairs
    ours_psnr, ours_ssim = psnr_8bit(x, y), ssim_8bit(x, y)
    for i in range(x.shape[0]):
        a, b = tensor_to_uint8(x[i]), tensor_to_uint8(y[i])
        assert abs(float(ours_psnr[i]) - peak_signal_noise_ratio(a, b, data_range=255)) < 1e-3
        ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=255, channel_axis=2)
        assert abs(float(ours_ssim[i]) - ref) < 1e-4


def test_identical_images_cap_psnr_and_give_ssim_one(pairs):
    x, _ = pairs
    assert torch.all(psnr_8bit(x, x) == 100.0)
    assert torch.allclose(ssim_8bit(x, x), torch.ones(x.shape[0]))


def test_lpips_scales_inputs_to_minus_one_one_and_grows_with_distortion(pairs):
    x, _ = pairs
    torch.manual_seed(0)
    metric = LPIPSMetric(random_backbone=True)
    assert torch.allclose(metric(x, x), torch.zeros(x.shape[0]), atol=1e-6)
    mild = (x + 0.02 * torch.randn_like(x)).clamp(0, 1)
    strong = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    assert (metric(x, mild) < metric(x, strong)).all()
    # the lpips package's own normalize=True maps [0, 1] to [-1, 1]: same numbers
    assert torch.allclose(metric(x, mild), metric.model(x, mild, normalize=True).flatten(), atol=1e-6)


def test_frechet_distance_matches_the_gaussian_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 3))
    b = rng.normal(loc=2.0, scale=3.0, size=(20000, 3))
    # |mu|^2 = 3 * 4; trace term = 3 * (1 + 9 - 2 * 3)
    assert abs(fid_from_features(a, b) - (12 + 12)) < 0.5
    assert abs(fid_from_features(a, a)) < 1e-6


def test_frechet_distance_agrees_with_the_sqrtm_formula():
    from scipy import linalg

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(300, 40)), rng.normal(size=(300, 40)) @ rng.normal(size=(40, 40)) * 0.3 + 0.5
    mu1, mu2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = (mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert abs(fid_from_features(a, b) - reference) < 1e-6 * max(1.0, reference)


def test_t_interval_and_bounds():
    m = mean_ci95([1.0, 2.0, 3.0, 4.0])
    assert m["mean"] == 2.5 and m["n"] == 4
    assert abs(m["ci95"][1] - 2.5 - 3.182446 * np.std([1, 2, 3, 4], ddof=1) / 2) < 1e-5
    assert mean_ci95([0.0, 0.0, 0.3], bounds=(0.0, 1.0))["ci95"][0] == 0.0


def test_text_measures():
    assert normalize_text("  Hello\n  WORLD ") == "hello world"
    assert cer("abcd", "abxd") == 0.25
    assert wer("the quick brown fox", "the quick brown box") == 0.25  # one word of four, not one character
    assert wer("a b c", "a c") == 1 / 3
    # an empty reference has no error rate (left out of means), whatever the hypothesis
    assert cer("", "abc") is None and cer("", "") is None and cer(" \n", "x") is None
    assert wer("", "a b") is None and wer("", "") is None
    assert cer("abc", "") == 1.0 and cer("ab", "abcdef") == 2.0  # a non-empty reference is never capped
    assert normalize_text("STRASSE") == normalize_text("straße")  # casefold, not lower()
    assert word_scores("River", "river") == (1.0, 1.0)
    acc, ned = word_scores("garden", "gardcn")
    assert acc == 0.0 and abs(ned - 5 / 6) < 1e-9


def test_detail_measures_on_a_blurred_grating():
    from scipy.ndimage import gaussian_filter

    y, x = np.mgrid[0:128, 0:128]
    grating = 0.5 + 0.4 * np.cos(2 * np.pi * 0.2 * x)
    img = np.repeat(np.round(grating * 255).astype(np.uint8)[..., None], 3, axis=2)
    blurred = np.repeat(np.round(gaussian_filter(grating, 2.0) * 255).astype(np.uint8)[..., None], 3, axis=2)
    assert abs(modulation_ratio(img, img, 0.2, 0) - 1) < 1e-9
    assert modulation_ratio(img, blurred, 0.2, 0) < 0.5
    assert energy_kept(band_energy_ratios(img, img)) == 1.0
    assert energy_kept(band_energy_ratios(img, blurred)) < 0.5
    assert edge_f1(img, img) == 1.0 and edge_f1(img, blurred) < 1.0
    assert resolved_frequency({0.1: 0.9, 0.2: 0.6, 0.3: 0.4, 0.4: 0.7}) == 0.2
