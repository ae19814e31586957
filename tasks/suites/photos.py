"""``photos``: the real photographs shipped with scikit-image and scikit-learn."""
from __future__ import annotations

import numpy as np
from skimage import data

from tokbench.tasks.data import Dataset, Item

VERSION = "1"
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry",
                  "hubble_deep_field", "retina", "cat", "coins", "moon", "motorcycle")


def _rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def build_photos_suite() -> Dataset:
    items = []
    for name in SKIMAGE_PHOTOS:
        img = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
        items.append(Item(f"skimage/{name}", _rgb(img), {"source": "scikit-image"}))
    from sklearn.datasets import load_sample_images

    for fname, img in zip(load_sample_images().filenames, load_sample_images().images):
        items.append(Item(f"sklearn/{fname.rsplit('/', 1)[-1]}", _rgb(img), {"source": "scikit-learn"}))
    return Dataset("photos", "builtin", VERSION, items)
