"""Extreme aspect ratios (issue #23, item 1): the crop box first, a bound read from the header."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import tokbench.imageio as imageio
from tokbench.imageio import BadImageError, MAX_ASPECT_RATIO, center_crop_geometry, read_image, resize_center_crop


def whole_then_crop(x_3HW: torch.Tensor, size: int) -> torch.Tensor:
    """The reference: resample the whole image (shorter side to size), then cut the centre."""
    _, (h, w), (top, left) = center_crop_geometry(*x_3HW.shape[-2:], size)
    x = F.interpolate(x_3HW[None], size=(h, w), mode="bicubic", antialias=True, align_corners=False)
    return x[0, :, top : top + size, left : left + size].clamp(0, 1)


@pytest.mark.parametrize("hw", [(48, 64), (64, 48), (9, 200), (200, 9), (33, 100), (300, 1000), (64, 64), (65, 64)])
@pytest.mark.parametrize("size", [32, 64])
def test_the_crop_first_equals_resampling_the_whole_image_then_cropping(hw, size):
    x = torch.rand(3, *hw, generator=torch.Generator().manual_seed(sum(hw) + size))
    got = resize_center_crop(x, size)
    assert got.shape == (3, size, size)
    torch.testing.assert_close(got, whole_then_crop(x, size), atol=1e-4, rtol=0)


def test_a_wide_strip_is_resampled_only_where_it_is_kept(monkeypatch):
    produced = []
    real = F.interpolate

    def counting(x, *args, **kwargs):
        out = real(x, *args, **kwargs)
        produced.append(out.numel())
        return out

    monkeypatch.setattr(imageio.F, "interpolate", counting)
    x = torch.rand(3, 9, 20_000)  # resampled whole, this strip would be 256 x 568,889 pixels
    assert resize_center_crop(x, 256).shape == (3, 256, 256)
    assert sum(produced) <= 3 * 256 * 64  # a band a few input pixels wide, not the strip


def test_aspect_ratios_beyond_the_bound_are_refused_from_the_header(tmp_path, monkeypatch):
    Image.new("RGB", (60_000, 9)).save(tmp_path / "strip.png")
    Image.new("RGB", (8 * MAX_ASPECT_RATIO, 8)).save(tmp_path / "panorama.png")
    Image.new("RGB", (9, 60_000)).save(tmp_path / "tower.png")
    decoded = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1) or real_load(self))
    for name, size in [("strip.png", "60000x9"), ("tower.png", "9x60000")]:
        with pytest.raises(BadImageError, match=rf"aspect ratio too extreme \({size}; the longer side may be at most "
                                                rf"{MAX_ASPECT_RATIO} times the shorter\)"):
            read_image(tmp_path / name)
    assert not decoded  # refused before any pixel was decoded
    assert read_image(tmp_path / "panorama.png").shape == (8, 8 * MAX_ASPECT_RATIO, 3)  # exactly at the bound


def test_training_scan_skips_the_strip_with_the_reason(tmp_path):
    from tokbench.training.data import scan_images

    Image.new("RGB", (60_000, 9)).save(tmp_path / "strip.png")
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(tmp_path / "ok.png")
    good, skipped = scan_images(tmp_path)
    assert [p.name for p in good] == ["ok.png"]
    assert skipped[0][0] == "strip.png" and "aspect ratio too extreme" in skipped[0][1]


def test_reconstruct_names_the_refused_file_in_one_line(tmp_path, capsys):
    from tokbench.cli import main

    Image.new("RGB", (60_000, 9)).save(tmp_path / "strip.png")
    assert main(["reconstruct", "identity", str(tmp_path / "strip.png"), "--out", str(tmp_path / "rec")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"tokbench: error: {tmp_path / 'strip.png'}: aspect ratio too extreme (60000x9; the longer side "
                   f"may be at most {MAX_ASPECT_RATIO} times the shorter)")
