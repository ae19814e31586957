"""Reading and writing images at the API boundary: float32 ``(3, H, W)`` RGB in ``[0, 1]``."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}


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


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as float32 ``(3, H, W)`` in ``[0, 1]``."""
    with Image.open(path) as image:
        image.load()
        return uint8_to_tensor(pil_to_rgb_array(image))


def uint8_to_tensor(arr_HW3: np.ndarray) -> torch.Tensor:
    if arr_HW3.ndim == 2:
        arr_HW3 = np.repeat(arr_HW3[..., None], 3, axis=2)
    arr_HW3 = np.require(arr_HW3, dtype=np.uint8, requirements=["C", "W"])  # torch wants writable memory
    return torch.from_numpy(arr_HW3).permute(2, 0, 1).float().div_(255.0)


def tensor_to_uint8(x_3HW: torch.Tensor) -> np.ndarray:
    """``[0, 1]`` float ``(3, H, W)`` -> uint8 ``(H, W, 3)``, rounded as a saved PNG would be."""
    return x_3HW.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()


def quantize_8bit(x_B3HW: torch.Tensor) -> torch.Tensor:
    """Round images to the 8-bit levels a PNG would store, staying float in ``[0, 1]``."""
    return x_B3HW.clamp(0, 1).mul(255).round().div(255)


def save_png(x_3HW: torch.Tensor, path: str | os.PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(tensor_to_uint8(x_3HW)).save(path, format="PNG")
