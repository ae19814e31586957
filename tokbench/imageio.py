"""Images in and out: the one loader, the one 8-bit rounding, the one resampling.

* `read_image` decodes any Pillow-readable file (EXIF orientation, palette, alpha, 16-bit)
  to uint8 ``(H, W, 3)``, or raises `BadImageError` with the reason -- evaluation, training
  and ``tokbench reconstruct`` all read files through it, with the same skip rules.
* `to_uint8` is the one place images are rounded to 8 bits (as a saved PNG would be);
  `quantize_8bit`, `tensor_to_uint8`, the metrics and the PNG writer go through it.
* `resize` is the one resampling: bicubic with antialiasing, used by the evaluation's
  resolution policy and by training crops alike; `resize_center_crop` is the evaluation's
  default policy (shorter side to N, then the central N x N) on one image, also used by
  ``tokbench gen encode``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from tokbench.atomic import atomic_path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
MIN_SIDE = 8  # smaller images (e.g. 1x1) cannot be scored meaningfully
# Larger images are refused from their header, before decoding: a 12,000 x 12,000 PNG took
# 150 s and 3.6 GB to score. 64 MP is above any common photo or scan; raise it with
# TOKBENCH_MAX_PIXELS (e.g. for gigapixel scans) where the memory is there.
DEFAULT_MAX_PIXELS = 64_000_000


class BadImageError(ValueError):
    """An image file that cannot be used; the message is the reason shown to the user."""


def max_pixels() -> int:
    """The pixel limit in force: ``TOKBENCH_MAX_PIXELS`` or `DEFAULT_MAX_PIXELS`."""
    value = os.environ.get("TOKBENCH_MAX_PIXELS", "")
    if not value:
        return DEFAULT_MAX_PIXELS
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"TOKBENCH_MAX_PIXELS must be a positive integer, got {value!r}")
    return int(value)


def pil_to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any Pillow image (grayscale, palette, RGBA, 16-bit, EXIF-rotated) -> uint8 ``(H, W, 3)``.

    EXIF orientation is applied; alpha is composited onto white (as a viewer shows it);
    16-bit images are scaled to 8 bits rather than clipped.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        arr = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        image = Image.fromarray(arr, mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_image(path: str | os.PathLike, limit: int | None = None) -> np.ndarray:
    """Decode an image file to uint8 ``(H, W, 3)``, or raise `BadImageError` saying why it cannot be used.

    ``limit`` (default `max_pixels`) is checked on the header, before any pixel is decoded.
    """
    path = Path(path)
    limit = max_pixels() if limit is None else limit
    try:
        if path.stat().st_size == 0:
            raise BadImageError("empty (zero-byte) file")
        with Image.open(path) as img:
            width, height = img.size
            if width * height > limit:
                raise BadImageError(f"too large ({width}x{height} = {width * height:,} pixels; the limit is "
                                    f"{limit:,}, set TOKBENCH_MAX_PIXELS to raise it)")
            img.load()
            arr = pil_to_rgb_array(img)
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise BadImageError("not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        # truncated files land here ("image file is truncated (...)")
        raise BadImageError(f"cannot decode: {err}") from None
    if min(arr.shape[:2]) < MIN_SIDE:
        raise BadImageError(f"too small ({arr.shape[1]}x{arr.shape[0]}; at least {MIN_SIDE}x{MIN_SIDE} needed)")
    return arr


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as float32 ``(3, H, W)`` in ``[0, 1]`` (`BadImageError` if it cannot be used)."""
    return uint8_to_tensor(read_image(path))


def uint8_to_tensor(arr_HW3: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` (or grayscale ``(H, W)``) -> float32 ``(3, H, W)`` in ``[0, 1]``."""
    if arr_HW3.ndim == 2:
        arr_HW3 = np.repeat(arr_HW3[..., None], 3, axis=2)
    arr_HW3 = np.require(arr_HW3, dtype=np.uint8, requirements=["C", "W"])  # torch wants writable memory
    return torch.from_numpy(arr_HW3).permute(2, 0, 1).float().div_(255.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """``[0, 1]`` floats -> uint8 levels 0..255, rounded to nearest as a saved PNG would be (any shape)."""
    return x.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Round images to the 8-bit levels a PNG would store, staying float32 in ``[0, 1]``."""
    return to_uint8(x).float().div_(255)


def tensor_to_uint8(x_3HW: torch.Tensor) -> np.ndarray:
    """``[0, 1]`` float ``(3, H, W)`` -> uint8 ``(H, W, 3)`` numpy array."""
    return to_uint8(x_3HW).permute(1, 2, 0).cpu().numpy()


def resize(x_B3HW: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resampling with antialiasing (when shrinking), clamped to ``[0, 1]``."""
    if tuple(x_B3HW.shape[-2:]) == tuple(size):
        return x_B3HW
    return F.interpolate(x_B3HW, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def center_crop_geometry(height: int, width: int, size: int) -> tuple[float, tuple[int, int], tuple[int, int]]:
    """``(scale, (h, w), (top, left))``: the shorter side of a ``height x width`` image scaled to
    ``size``, and where the central ``size x size`` crop of the resized image starts."""
    if size < 1:
        raise ValueError(f"the crop size must be a positive number of pixels, got {size}")
    s = size / min(height, width)
    h, w = max(size, round(height * s)), max(size, round(width * s))
    return s, (h, w), ((h - size) // 2, (w - size) // 2)


def resize_center_crop(x_3HW: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` with `resize`, then take the central ``size x size``.

    The same crop as ``tokbench eval --resolution N`` (``tokbench.tasks.data.prepare``).
    """
    _, hw, (top, left) = center_crop_geometry(*x_3HW.shape[-2:], size)
    x_3hw = resize(x_3HW[None], hw)[0]
    return x_3hw[:, top : top + size, left : left + size]


def save_png(x_3HW: torch.Tensor, path: str | os.PathLike) -> None:
    """Write a ``[0, 1]`` image as an 8-bit PNG, atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(tensor_to_uint8(x_3HW)).save(tmp, format="PNG")
