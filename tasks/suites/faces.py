"""``faces``: the real faces that ship offline -- a weak suite; the faces task is meant for ``--data``.

* scikit-image's ``astronaut`` (Eileen Collins; at the default 256 px the face is about
  45 px, a medium face in TokBench's buckets);
* mosaics of scikit-image's ``lfw_subset``: 84 different faces of Labeled Faces in the Wild,
  each only a **25x25 px grayscale crop**, upscaled (Lanczos) into 256x256 grids -- 2x2 at
  96 px (large faces), 4x4 at 48 px (medium), 8x8 at 25 px (small, not upscaled).

How weak that is: the LFW faces carry no more detail than 25x25 pixels, grey, tightly
cropped; an upscaled face is smooth, so a tokenizer loses less identity on it than on a real
photo of that size, and dlib's detector misses some of the crops (the run lists them). The
numbers show that the pipeline works and rank tokenizers coarsely; for results, run the task
on a folder of real face photos (``--data``, optionally with a ``faces.json`` of boxes).
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from skimage import data

from tokbench.tasks.data import Dataset, Item

VERSION = "1"
SIZE = 256
# (grid, face size in px): cells of SIZE // grid px, faces centred in them on mid-grey.
MOSAICS = (("large", 2, 96), ("medium", 4, 48), ("small", 8, 25))


def lfw_mosaic(faces: np.ndarray, grid: int, face_px: int) -> np.ndarray:
    """``grid x grid`` LFW faces (float [0, 1], 25x25) resized to ``face_px`` on a 256x256 RGB canvas."""
    cell = SIZE // grid
    canvas = np.full((SIZE, SIZE), 128, np.uint8)
    margin = (cell - face_px) // 2
    for k, face in enumerate(faces[: grid * grid]):
        tile = Image.fromarray(np.round(face * 255).astype(np.uint8))
        if face_px != tile.width:
            tile = tile.resize((face_px, face_px), Image.LANCZOS)
        row, col = divmod(k, grid)
        y, x = row * cell + margin, col * cell + margin
        canvas[y : y + face_px, x : x + face_px] = np.asarray(tile)
    return np.repeat(canvas[..., None], 3, axis=2)


def build_faces_suite() -> Dataset:
    items = [Item("skimage/astronaut", np.ascontiguousarray(data.astronaut()[..., :3]), {"source": "scikit-image"})]
    faces = data.lfw_subset()[:100]  # the first 100 of the 200 crops are faces, the rest are not
    start = 0
    for size, grid, face_px in MOSAICS:
        chunk = faces[start : start + grid * grid]
        start += grid * grid
        items.append(Item(f"lfw/{size}_{grid}x{grid}", lfw_mosaic(chunk, grid, face_px),
                          {"source": "scikit-image lfw_subset", "grid": grid, "face_px": face_px}))
    return Dataset("faces", "builtin", VERSION, items)
