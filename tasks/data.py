"""Benchmark data: items, image folders with optional text manifests, the resolution policy."""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tokbench.imageio import (IMAGE_SUFFIXES, BadImageError, center_crop_geometry, read_image, resize, resize_center_crop,
                              uint8_to_tensor)
from tokbench.reference_preprocessing import reference_prepare
from tokbench.tasks.face_manifest import read_face_manifest

__all__ = ["BadImageError", "Item", "Dataset", "subset", "load_folder", "parse_resolution", "Prepared", "prepare",
           "crop_content"]

_HASH_CHUNK = 1 << 20


@dataclass
class Item:
    """One benchmark image: a stable id, its pixels or the file holding them, and task metadata.

    Built-in suites hold generated pixels (``image``, uint8 ``(H, W, 3)``); folder items hold
    only their ``path`` and are decoded when scored (in data-loader workers), so a folder of
    50,000 images is never held in memory at once.
    """

    id: str
    image: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    def pixels(self) -> np.ndarray:
        """uint8 ``(H, W, 3)``; :class:`BadImageError` with the reason if the file cannot be used."""
        if self.image is not None:
            return self.image
        return read_image(self.path)


@dataclass
class Dataset:
    name: str
    source: str  # "builtin" or "folder"
    version: str
    items: list[Item]
    _fingerprint: str | None = field(default=None, repr=False)

    def fingerprint(self) -> str:
        """SHA-256 over the generator/version and every item's id, content and metadata.

        Content is the file's bytes for folder items (hashed as read, never decoded) and the
        generated pixels for built-in ones. Computed once, on the rank that writes results.
        """
        if self._fingerprint is None:
            digest = hashlib.sha256(f"{self.source}:{self.name}:{self.version}".encode())
            for item in self.items:
                digest.update(item.id.encode())
                if item.image is not None:
                    digest.update(np.ascontiguousarray(item.image).tobytes())
                else:
                    with open(item.path, "rb") as f:
                        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
                            digest.update(chunk)
                digest.update(json.dumps(item.meta, sort_keys=True, default=str).encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


def subset(items: list[Item], limit: int | None) -> list[Item]:
    """``limit`` items spread evenly over the list (first and last included), in order.

    A quick look (``--limit``) then still covers every kind of image of a suite -- small and
    large text, low and high frequencies -- instead of only the first few.
    """
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    if limit == 1:
        return [items[0]]
    step = (len(items) - 1) / (limit - 1)
    return [items[round(i * step)] for i in range(limit)]


def read_manifest(folder: Path) -> dict[str, dict]:
    """Ground truth per relative path from ``manifest.csv`` (columns file,text) or ``manifest.jsonl``
    (``file``, and ``text`` and/or ``words``: ground-truth word boxes, as the text task's word scores need)."""
    if (folder / "manifest.jsonl").is_file():
        rows = []
        for n, line in enumerate((folder / "manifest.jsonl").read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{folder / 'manifest.jsonl'}: line {n} is not JSON ({err.msg})") from None
    elif (folder / "manifest.csv").is_file():
        with open(folder / "manifest.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        return {}
    out = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "file" not in row or ("text" not in row and "words" not in row):
            raise ValueError(f"{folder}: manifest row {i + 1} needs 'file' and 'text' (or 'words') fields, got {row!r}")
        meta: dict = {} if "text" not in row else {"text": str(row["text"])}
        if "words" in row:
            meta["words"] = _manifest_words(row["words"], f"{folder}: manifest row {i + 1}")
        out[str(row["file"])] = meta
    return out


def _manifest_words(words, where: str) -> list[dict]:
    """Ground-truth word boxes of a ``manifest.jsonl`` row: ``[{"text": "Stop", "box": [x0, y0, x1, y1]}, ...]``
    in pixels of the image file; ``size_px`` (font size, for the own word buckets) defaults to the box height."""
    if not isinstance(words, list):
        raise ValueError(f"{where}: 'words' must be a list of {{text, box}} objects, got {type(words).__name__}")
    out = []
    for j, word in enumerate(words, 1):
        box = word.get("box") if isinstance(word, dict) else None
        text = word.get("text") if isinstance(word, dict) else None
        if not isinstance(text, str) or not text:
            raise ValueError(f"{where}: word {j} needs a non-empty 'text', got {word!r}")
        if (not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box)
                or not (0 <= box[0] < box[2] and 0 <= box[1] < box[3])):
            raise ValueError(f"{where}: word {j} ({text!r}) needs 'box': [x0, y0, x1, y1] with 0 <= x0 < x1 and "
                             f"0 <= y0 < y1, got {box!r}")
        size = word.get("size_px", box[3] - box[1])
        out.append({"text": text, "box": [float(v) for v in box], "size_px": float(size)})
    return out


def load_folder(folder: str | Path, name: str | None = None) -> Dataset:
    """Every image file under ``folder`` (recursive, sorted), with its manifest text and
    face boxes (`tokbench.tasks.face_manifest`) if any.

    Files are only listed here; unreadable ones are found when decoded and then skipped
    with a reason (see `tokbench.imageio.read_image`). A folder without image files is an error.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such data folder")
    manifest = read_manifest(folder)
    faces = read_face_manifest(folder)  # None: no face boxes given (the faces task detects them)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: contains no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    items = []
    for path in files:
        rel = path.relative_to(folder).as_posix()
        meta = dict(manifest.get(rel, {}))
        if faces is not None:
            meta["faces"] = faces.get(rel, [])
        items.append(Item(rel, None, meta, path))
    unknown = sorted((set(manifest) | set(faces or {})) - {it.id for it in items})
    if unknown:
        raise ValueError(f"{folder}: manifest names {len(unknown)} file(s) not in the folder (first: {unknown[0]})")
    return Dataset(name or folder.name, "folder", "1", items)


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
    content_box: tuple[int, int, int, int]  # (top, left, height, width) of the image content inside x
    scale: float  # evaluation pixels per original pixel
    # (top, left) in x of the original's pixel (0, 0): negative where a center crop cut the original
    origin: tuple[int, int] = (0, 0)
    source_hw: tuple[int, int] | None = None  # the original image's (height, width)

    @property
    def content_origin(self) -> tuple[int, int]:
        """(top, left) of the original's pixel (0, 0) inside the content crop (`crop_content`):
        where original-image boxes land after scaling by ``scale``."""
        return (self.origin[0] - self.content_box[0], self.origin[1] - self.content_box[1])


def prepare(image_HW3: np.ndarray, policy: str, preprocessing: str = "default") -> Prepared:
    """Apply the resolution policy. Metrics are computed at this resolution, never lower.

    ``preprocessing``: ``default`` (tokbench's resampling), or a reference pipeline of
    `tokbench.reference_preprocessing` (``adm``, ``var``: resize-and-crop policies only).
    """
    mode, n = parse_resolution(policy)
    x = uint8_to_tensor(image_HW3)
    H, W = x.shape[-2:]
    if preprocessing != "default":
        if mode != "resize":
            raise ValueError(f"the {preprocessing!r} preprocessing resizes and crops to N x N: "
                             f"it needs --resolution N, not {policy!r}")
        arr, geometry = reference_prepare(preprocessing, image_HW3, n)
        top, left = geometry.crop
        return Prepared(uint8_to_tensor(arr), (0, 0, n, n), geometry.scale, origin=(-top, -left), source_hw=(H, W))
    if mode == "native":
        return Prepared(x, (0, 0, H, W), 1.0, source_hw=(H, W))
    if mode == "resize":  # shorter side to n with antialiasing, then center crop
        s, _, (top, left) = center_crop_geometry(H, W, n)
        return Prepared(resize_center_crop(x, n), (0, 0, n, n), s, origin=(-top, -left), source_hw=(H, W))
    s = n / max(H, W)  # letterbox: longer side to n, pad to a square with white
    h, w = max(1, round(H * s)), max(1, round(W * s))
    x = resize(x[None], (h, w))[0]
    canvas = torch.ones(3, n, n)
    top, left = (n - h) // 2, (n - w) // 2
    canvas[:, top : top + h, left : left + w] = x
    return Prepared(canvas, (top, left, h, w), s, origin=(top, left), source_hw=(H, W))


def crop_content(x_3HW: torch.Tensor, prepared: Prepared) -> torch.Tensor:
    """The part of an evaluation-resolution image that holds content (letterbox padding cut off)."""
    top, left, h, w = prepared.content_box
    return x_3HW[:, top : top + h, left : left + w]
