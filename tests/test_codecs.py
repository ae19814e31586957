"""Codec baselines on real photos: rate and distortion move the right way."""
import pytest
import torch
from helpers import photo_batch

import tokbench
from tokbench.metrics_basic import psnr_8bit


@pytest.fixture(scope="module")
def photos():
    return photo_batch(96)


def psnr_and_bits(spec, x):
    tok = tokbench.load(spec)
    tokens = tok.encode(x)
    return float(psnr_8bit(x, tok.decode(tokens)).mean()), float(tokens.bits_per_image().mean())


def test_jpeg_psnr_and_bits_rise_with_quality(photos):
    results = [psnr_and_bits(f"jpeg:q={q}", photos) for q in (5, 20, 50, 80, 95)]
    psnrs, bits = zip(*results)
    assert all(a < b for a, b in zip(psnrs, psnrs[1:])), psnrs
    assert all(a < b for a, b in zip(bits, bits[1:])), bits


def test_identity_is_lossless_and_counts_24_bits_per_pixel(photos):
    psnr, bits = psnr_and_bits("identity", photos)
    assert psnr == 100.0 and bits == 24 * 96 * 96


def test_resize_loses_more_as_the_factor_grows(photos):
    results = [psnr_and_bits(f"resize:f={f}", photos) for f in (2, 4, 8)]
    assert results[0][0] > results[1][0] > results[2][0]
    assert [b for _, b in results] == [24 * 96 * 96 / f**2 for f in (2, 4, 8)]


def test_webp_round_trip_and_odd_sizes():
    x = torch.rand(2, 3, 33, 47)
    for spec in ("webp:q=50", "jpeg:q=50", "resize:f=4"):
        assert tokbench.load(spec).reconstruct(x).shape == x.shape


def test_bad_codec_options():
    with pytest.raises(ValueError, match="quality q must be an integer in 1..100"):
        tokbench.load("jpeg:q=0")
    with pytest.raises(ValueError, match="factor f"):
        tokbench.load("resize:f=0")
