"""Benchmark data: items, image folders with optional text manifests, the resolution policy."""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from tokbench.imageio import IMAGE_SUFFIXES, pil_to_rgb_array, uint8_to_tensor

MIN_SIDE = 8  # smaller images (e.g. 1x1) cannot be scored meaningfully


@dataclass
class Item:
    """One benchmark image: a stable id, uint8 ``(H, W, 3)`` pixels, and task metadata."""

    id: str
    image: np.ndarray
    meta: dict = field(default_factory=dict)


@dataclass
class Dataset:
    name: str
    source: str  # "builtin" or "folder"
    version: str
    items: list[Item]
    skipped: list[dict] = field(default_factory=list)  # [{"file", "reason"}]

    def fingerprint(self) -> str:
        """SHA-256 over the generator/version and every item's id, pixels and metadata."""
        digest = hashlib.sha256(f"{self.source}:{self.name}:{self.version}".encode())
        for item in self.items:
            digest.update(item.id.encode())
            digest.update(np.ascontiguousarray(item.image).tobytes())
            digest.update(json.dumps(item.meta, sort_keys=True, default=str).encode())
        return digest.hexdigest()


def read_manifest(folder: Path) -> dict[str, dict]:
    """Ground truth per relative path from ``manifest.csv`` (columns file,text) or ``manifest.jsonl``."""
    if (folder / "manifest.jsonl").is_file():
        rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines() if line.strip()]
    elif (folder / "manifest.csv").is_file():
        with open(folder / "manifest.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        return {}
    out = {}
    for i, row in enumerate(rows):
        if "file" not in row or "text" not in row:
            raise ValueError(f"{folder}: manifest row {i + 1} needs 'file' and 'text' fields, got {sorted(row)}")
        out[str(row["file"])] = {"text": str(row["text"])}
    return out


def load_folder(folder: str | Path, name: str | None = None) -> Dataset:
    """Every image under ``folder`` (recursive); unreadable files are skipped with a reason."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such data folder")
    manifest = read_manifest(folder)
    items, skipped = [], []
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: contains no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    for path in files:
        rel = path.relative_to(folder).as_posix()
        try:
            if path.stat().st_size == 0:
                raise ValueError("empty (zero-byte) file")
            with Image.open(path) as img:
                img.load()
                arr = pil_to_rgb_array(img)
            if min(arr.shape[:2]) < MIN_SIDE:
                raise ValueError(f"too small ({arr.shape[1]}x{arr.shape[0]}; at least {MIN_SIDE}x{MIN_SIDE} needed)")
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
            skipped.append({"file": rel, "reason": f"{type(err).__name__}: {err}"})
            continue
        items.append(Item(rel, arr, dict(manifest.get(rel, {}))))
    if not items:
        raise ValueError(f"{folder}: none of the {len(files)} image files could be read")
    return Dataset(name or folder.name, "folder", "1", items, skipped)


# -- resolution policy --------------------------------------------------------------------
def parse_resolution(policy: str) -> tuple[str, int | None]:
    """``"256"`` -> ("resize", 256); ``"letterbox:512"`` -> ("letterbox", 512); ``"native"``."""
    if policy == "native":
        return "native", None
    if policy.startswith("letterbox:") and policy.split(":", 1)[1].isdigit():
        return "letterbox", int(policy.split(":", 1)[1])
    if policy.isdigit() and int(policy) > 0:
        return "resize", int(policy)
    raise ValueError(f"resolution must be N (e.g. 256), letterbox:N or native, got {policy!r}")


@dataclass
class Prepared:
    """An image at evaluation resolution plus how to map a reconstruction back."""

    x_3HW: torch.Tensor
    content_box: tuple[int, int, int, int]  # (top, left, height, width) of the image inside x
    scale: float  # evaluation pixels per original pixel


def prepare(image_HW3: np.ndarray, policy: str) -> Prepared:
    """Apply the resolution policy. Metrics are computed at this resolution, never lower."""
    mode, n = parse_resolution(policy)
    x = uint8_to_tensor(image_HW3)
    H, W = x.shape[-2:]
    if mode == "native":
        return Prepared(x, (0, 0, H, W), 1.0)
    if mode == "resize":  # shorter side to n with antialiasing, then center crop
        s = n / min(H, W)
        h, w = max(n, round(H * s)), max(n, round(W * s))
        if (h, w) != (H, W):
            x = F.interpolate(x[None], size=(h, w), mode="bicubic", antialias=True, align_corners=False)[0].clamp(0, 1)
        top, left = (h - n) // 2, (w - n) // 2
        return Prepared(x[:, top : top + n, left : left + n], (0, 0, n, n), s)
    s = n / max(H, W)  # letterbox: longer side to n, pad to a square with white
    h, w = max(1, round(H * s)), max(1, round(W * s))
    if (h, w) != (H, W):
        x = F.interpolate(x[None], size=(h, w), mode="bicubic", antialias=True, align_corners=False)[0].clamp(0, 1)
    canvas = torch.ones(3, n, n)
    top, left = (n - h) // 2, (n - w) // 2
    canvas[:, top : top + h, left : left + w] = x
    return Prepared(canvas, (top, left, h, w), s)


def crop_content(x_3HW: torch.Tensor, prepared: Prepared) -> torch.Tensor:
    """The part of an evaluation-resolution image that holds content (letterbox padding cut off)."""
    top, left, h, w = prepared.content_box
    return x_3HW[:, top : top + h, left : left + w]
