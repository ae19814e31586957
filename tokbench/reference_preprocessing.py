"""The reference pipelines' own preprocessing, for protocol presets that reproduce their tables.

tokbench's default (`tokbench.imageio`: antialiased bicubic, shorter side to N, centre crop)
differs from the published pipelines by about one grey level, and rFID moves with that. The
presets therefore prepare images exactly as the reference code does (PIL, uint8 in and out):

* ``adm`` -- ADM's ``center_crop_arr`` (openai/guided-diffusion ``image_datasets.py``), which
  LlamaGen's ImageNet evaluation uses: while the shorter side is at least twice the target,
  halve both sides (floor) with BOX filtering; then scale the shorter side to the target with
  BICUBIC (each side ``round(side * scale)``); then crop the centre (offsets floored).
* ``var`` -- VAR's validation transform (FoundationVision/VAR ``utils/data.py``): torchvision
  ``Resize(round(1.125 * N))`` with LANCZOS (shorter side to 288 for N = 256, the longer side
  ``int(288 * long / short)``), then ``CenterCrop(N)`` (offsets ``int(round((side - N) / 2))``).
* ``vtbench`` -- VTBench's ``pil_to_tensor`` (huawei-lin/VTBench ``src/data_processing.py``,
  ``lock_ratio`` and ``center_crop``): scale so the image covers N x N
  (``max(N / W, N / H)``), each side ``round(side * scale)``, LANCZOS, centre crop (offsets floored).

Each returns the image and its geometry (scale, crop offsets), so that word and face boxes
given on the source image can be mapped onto it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

VAR_MID_RATIO = 1.125  # VAR's mid_reso: resize to 1.125 x the final size before the centre crop


@dataclass(frozen=True)
class Geometry:
    """How a prepared square image relates to its source: ``scale`` (prepared pixels per source
    pixel, along the shorter side) and ``crop`` ((top, left) of the crop in the resized image)."""

    scale: float
    crop: tuple[int, int]


def _check(image_HW3: np.ndarray, size: int) -> Image.Image:
    if image_HW3.dtype != np.uint8 or image_HW3.ndim != 3 or image_HW3.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image_HW3.dtype} {image_HW3.shape}")
    if size < 1:
        raise ValueError(f"target size must be >= 1, got {size}")
    return Image.fromarray(image_HW3)


def adm_center_crop(image_HW3: np.ndarray, size: int) -> tuple[np.ndarray, Geometry]:
    """ADM / LlamaGen ``center_crop_arr`` to ``size x size`` (see the module docstring)."""
    img = _check(image_HW3, size)
    short = min(img.size)
    while min(img.size) >= 2 * size:
        img = img.resize((img.width // 2, img.height // 2), resample=Image.BOX)
    scale = size / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), resample=Image.BICUBIC)
    arr = np.asarray(img)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return np.ascontiguousarray(arr[top : top + size, left : left + size]), Geometry(size / short, (top, left))


def var_resize_crop(image_HW3: np.ndarray, size: int) -> tuple[np.ndarray, Geometry]:
    """VAR's validation transform to ``size x size`` (see the module docstring)."""
    img = _check(image_HW3, size)
    mid = round(VAR_MID_RATIO * size)
    w, h = img.size
    if w <= h:
        new_w, new_h = mid, int(mid * h / w)
    else:
        new_w, new_h = int(mid * w / h), mid
    arr = np.asarray(img.resize((new_w, new_h), resample=Image.LANCZOS))
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return np.ascontiguousarray(arr[top : top + size, left : left + size]), Geometry(mid / min(w, h), (top, left))


def vtbench_cover_crop(image_HW3: np.ndarray, size: int) -> tuple[np.ndarray, Geometry]:
    """VTBench's resize-to-cover and centre crop to ``size x size`` (see the module docstring)."""
    img = _check(image_HW3, size)
    scale = max(size / img.width, size / img.height)
    img = img.resize((round(img.width * scale), round(img.height * scale)), resample=Image.LANCZOS)
    arr = np.asarray(img)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return np.ascontiguousarray(arr[top : top + size, left : left + size]), Geometry(scale, (top, left))


PIPELINES = {"adm": adm_center_crop, "var": var_resize_crop, "vtbench": vtbench_cover_crop}


def reference_prepare(name: str, image_HW3: np.ndarray, size: int) -> tuple[np.ndarray, Geometry]:
    """Prepare ``image_HW3`` with the reference pipeline ``name`` (``adm``, ``var`` or ``vtbench``)."""
    if name not in PIPELINES:
        raise ValueError(f"unknown reference preprocessing {name!r}; choose from {', '.join(PIPELINES)}")
    return PIPELINES[name](image_HW3, size)
