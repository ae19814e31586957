"""The reference pipelines' preprocessing (`tokbench.reference_preprocessing`) against their
published formulas, written out here step by step, on real photos (scikit-image's samples)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from tokbench.imageio import resize_center_crop, uint8_to_tensor
from tokbench.reference_preprocessing import adm_center_crop, reference_prepare, var_resize_crop, vtbench_cover_crop
from tokbench.tasks.data import prepare

ASTRONAUT = data.astronaut()  # 512 x 512
COFFEE = data.coffee()  # 400 x 600: landscape
PORTRAIT = np.ascontiguousarray(data.chelsea()[:, :250])  # 300 x 250: portrait


def adm_reference(image: np.ndarray, size: int) -> np.ndarray:
    # ADM / LlamaGen center_crop_arr: halve with BOX while the short side >= 2 * size,
    # then BICUBIC so the short side is size (sides round(s * scale)), then crop the centre (floor).
    pil = Image.fromarray(image)
    while min(pil.size) >= 2 * size:
        pil = pil.resize(tuple(x // 2 for x in pil.size), resample=Image.BOX)
    scale = size / min(pil.size)
    pil = pil.resize(tuple(round(x * scale) for x in pil.size), resample=Image.BICUBIC)
    arr = np.array(pil)
    y, x = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[y : y + size, x : x + size]


@pytest.mark.parametrize("image,size", [(ASTRONAUT, 256), (ASTRONAUT, 128), (COFFEE, 256), (COFFEE, 96), (PORTRAIT, 64)])
def test_adm_center_crop_is_the_published_formula(image, size):
    out, geometry = adm_center_crop(image, size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, adm_reference(image, size))
    assert geometry.scale == pytest.approx(size / min(image.shape[:2]))


def test_adm_halves_with_box_before_bicubic():
    """Astronaut 512 -> 128: two BOX halvings (512 >= 256, 256 >= 256) leave nothing for BICUBIC to do,
    so the result is the 4x4 block mean (rounded at each halving) -- unlike a direct bicubic downscale."""
    out, _ = adm_center_crop(ASTRONAUT, 128)
    block_mean = ASTRONAUT.reshape(128, 4, 128, 4, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(out.astype(np.float64) - block_mean).max() <= 2.0
    direct = np.asarray(Image.fromarray(ASTRONAUT).resize((128, 128), resample=Image.BICUBIC))
    assert np.abs(out.astype(int) - direct.astype(int)).max() > 5


@pytest.mark.parametrize("image", [ASTRONAUT, COFFEE, PORTRAIT])
def test_var_transform_equals_torchvision_resize_288_lanczos_and_center_crop(image):
    from torchvision import transforms

    # VAR utils/data.py val_aug: Resize(round(1.125 * 256), LANCZOS), CenterCrop(256)
    reference = transforms.Compose([transforms.Resize(288, interpolation=transforms.InterpolationMode.LANCZOS),
                                    transforms.CenterCrop(256)])
    out, geometry = var_resize_crop(image, 256)
    np.testing.assert_array_equal(out, np.asarray(reference(Image.fromarray(image))))
    assert geometry.scale == pytest.approx(288 / min(image.shape[:2]))


@pytest.mark.parametrize("image", [COFFEE, PORTRAIT])
def test_vtbench_cover_crop_is_its_formula(image):
    # VTBench pil_to_tensor(lock_ratio, center_crop): scale = max(N / W, N / H), round sides, LANCZOS, floor crop
    H, W = image.shape[:2]
    scale = max(256 / W, 256 / H)
    pil = Image.fromarray(image).resize((round(W * scale), round(H * scale)), Image.LANCZOS)
    left, top = (pil.width - 256) // 2, (pil.height - 256) // 2
    out, _ = vtbench_cover_crop(image, 256)
    np.testing.assert_array_equal(out, np.asarray(pil.crop((left, top, left + 256, top + 256))))


def test_reference_pipelines_differ_from_tokbench_default_by_about_a_grey_level():
    """Why the presets need them: rFID moves with a grey level on every pixel."""
    default = resize_center_crop(uint8_to_tensor(ASTRONAUT), 256)
    adm = uint8_to_tensor(adm_center_crop(ASTRONAUT, 256)[0])
    diff = (default - adm).abs() * 255
    assert 0.2 < float(diff.mean()) < 3.0


def test_prepare_uses_the_named_pipeline_and_maps_boxes_onto_it():
    p = prepare(COFFEE, "256", "adm")
    torch.testing.assert_close(p.x_3HW, uint8_to_tensor(adm_reference(COFFEE, 256)))
    assert p.source_hw == (400, 600) and p.content_box == (0, 0, 256, 256)
    # the source's centre column lands on the crop's centre column
    assert (300 * p.scale + p.origin[1]) == pytest.approx(128, abs=1)
    assert prepare(COFFEE, "256", "var").x_3HW.shape == (3, 256, 256)


def test_reference_pipelines_refuse_what_they_cannot_do():
    with pytest.raises(ValueError, match="needs --resolution N"):
        prepare(COFFEE, "letterbox:256", "adm")
    with pytest.raises(ValueError, match="unknown reference preprocessing 'bilinear'"):
        reference_prepare("bilinear", COFFEE, 256)
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\)"):
        adm_center_crop(COFFEE.astype(np.float32), 256)
