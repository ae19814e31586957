"""Images in and out: the one loader, the one 8-bit rounding, the one resampling.

* `read_image` decodes any Pillow-readable file (EXIF orientation, palette, alpha, 16-bit)
  to uint8 ``(H, W, 3)``, or raises `BadImageError` with the reason -- evaluation, training
  and ``tokbench reconstruct`` all read files through it, with the same skip rules.
* `to_uint8` is the one place images are rounded to 8 bits (as a saved PNG would be);
  `quantize_8bit`, `tensor_to_uint8`, the metrics and the PNG writer go through it.
* `resize` is the one resampling: bicubic with antialiasing, used by the evaluation's
  resolution policy and by training crops alike; `resize_center_crop` is the evaluation's
  default policy (shorter side to N, then the central N x N) on one image, also used by
  ``tokbench gen encode`` and the training's validation crops. It computes the crop box
  first and resamples only the kept pixels, so its cost does not grow with the aspect ratio.
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
# Longer side / shorter side. A 60,000 x 9 strip keeps 0.015 % of itself in a center crop and is
# no photo, scan or page; 100:1 is above any panorama or text-line image in use.
MAX_ASPECT_RATIO = 100


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


def check_dimensions(width: int, height: int, limit: int | None = None,
                     max_aspect: float = MAX_ASPECT_RATIO) -> None:
    """Raise `BadImageError` if a ``width x height`` image (read from a header) is over the pixel
    limit (default `max_pixels`) or its longer side is over ``max_aspect`` times its shorter."""
    limit = max_pixels() if limit is None else limit
    if width * height > limit:
        raise BadImageError(f"too large ({width}x{height} = {width * height:,} pixels; the limit is "
                            f"{limit:,}, set TOKBENCH_MAX_PIXELS to raise it)")
    if max(width, height) > max_aspect * max(1, min(width, height)):
        raise BadImageError(f"aspect ratio too extreme ({width}x{height}; the longer side may be at most "
                            f"{max_aspect:g} times the shorter)")


def read_image(path: str | os.PathLike, limit: int | None = None,
               max_aspect: float = MAX_ASPECT_RATIO) -> np.ndarray:
    """Decode an image file to uint8 ``(H, W, 3)``, or raise `BadImageError` saying why it cannot be used.

    ``limit`` (default `max_pixels`) and ``max_aspect`` (longer side / shorter side) are checked
    on the header, before any pixel is decoded.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImageError("empty (zero-byte) file")
        with Image.open(path) as img:
            check_dimensions(*img.size, limit, max_aspect)
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


def _bicubic_rows(in_size: int, out_size: int, start: int, count: int) -> tuple[int, torch.Tensor]:
    """Rows ``start .. start+count`` of the matrix `resize` applies along one axis (``in_size`` ->
    ``out_size``): ``(lo, W_ci)`` with ``W_ci`` over input pixels ``lo .. lo+i`` (the rest are 0).

    The antialiased bicubic of ``F.interpolate`` (Keys cubic, a = -0.5, support widened by the
    shrink factor, weights normalised per output pixel), so a crop can be resampled without
    resampling what it cuts away; tests check it against ``F.interpolate`` on the whole image.
    """
    scale = in_size / out_size
    stretch = max(scale, 1.0)  # shrinking widens the kernel: that is the antialiasing
    center_c = scale * (torch.arange(start, start + count, dtype=torch.float64) + 0.5)
    first_c = (center_c - 2.0 * stretch + 0.5).floor().clamp(min=0)
    end_c = (center_c + 2.0 * stretch + 0.5).floor().clamp(max=in_size)
    taps = int((end_c - first_c).max())
    pos_ck = first_c[:, None] + torch.arange(taps, dtype=torch.float64)  # each output's input pixels
    d_ck = ((pos_ck - center_c[:, None] + 0.5) / stretch).abs()
    a = -0.5
    w_ck = torch.where(d_ck < 1, ((a + 2) * d_ck - (a + 3)) * d_ck * d_ck + 1,
                       torch.where(d_ck < 2, (((d_ck - 5) * d_ck + 8) * d_ck - 4) * a, 0.0))
    w_ck = w_ck * (pos_ck < end_c[:, None])
    w_ck = w_ck / w_ck.sum(1, keepdim=True)
    lo, hi = int(first_c[0]), int(end_c[-1])
    w_ci = torch.zeros(count, hi - lo, dtype=torch.float64)
    w_ci.scatter_add_(1, (pos_ck - lo).long().clamp(max=hi - lo - 1), w_ck)  # clamped taps add weight 0
    return lo, w_ci.float()


def resize_center_crop(x_3HW: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` with `resize`, then take the central ``size x size``.

    The same crop as ``tokbench eval --resolution N`` (``tokbench.tasks.data.prepare``). The crop
    box is computed first: the shorter axis is resampled whole (only the input columns or rows the
    crop needs), the longer one only at the kept pixels, so a 60,000 x 9 strip costs what a 9 x 9
    square does instead of resampling to 256 x 1,706,667 (equal to resizing the whole image, then
    cropping, up to float rounding).
    """
    H, W = x_3HW.shape[-2:]
    _, (h, w), (top, left) = center_crop_geometry(H, W, size)
    if (h, w) == (size, size):
        return resize(x_3HW[None], (size, size))[0]
    if w > size:  # landscape: every row is kept, columns left .. left+size
        lo, w_ci = _bicubic_rows(W, w, left, size)
        x_3hi = F.interpolate(x_3HW[None, :, :, lo : lo + w_ci.shape[1]], size=(size, w_ci.shape[1]),
                              mode="bicubic", antialias=True, align_corners=False)[0]
        return (x_3hi @ w_ci.T).clamp(0, 1)
    lo, w_ri = _bicubic_rows(H, h, top, size)  # portrait: rows top .. top+size
    x_3iw = F.interpolate(x_3HW[None, :, lo : lo + w_ri.shape[1], :], size=(w_ri.shape[1], size),
                          mode="bicubic", antialias=True, align_corners=False)[0]
    return (w_ri @ x_3iw).clamp(0, 1)


def save_png(x_3HW: torch.Tensor, path: str | os.PathLike) -> None:
    """Write a ``[0, 1]`` image as an 8-bit PNG, atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(tensor_to_uint8(x_3HW)).save(tmp, format="PNG")
