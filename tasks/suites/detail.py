"""``detail``: procedural patterns with known frequency content, plus real textures.

Gratings (sinusoids at known spatial frequencies and orientations) give the modulation
transfer; zone plates, Siemens stars, line pairs, checkerboards and band-limited noise
stress fine structure; scikit-image's ``brick``, ``grass`` and ``gravel`` are real texture.
Every image is 256x256 and generated from a fixed seed.
"""
from __future__ import annotations

import numpy as np
from skimage import data, transform

from tokbench.tasks.data import Dataset, Item

VERSION = "1"
SIZE = 256
SEED = 20261122
GRATING_FREQUENCIES = (0.02, 0.04, 0.06, 0.09, 0.12, 0.16, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45)  # cycles/pixel
GRATING_ORIENTATIONS = (0, 45, 90)  # degrees


def _to_uint8_rgb(gray01: np.ndarray) -> np.ndarray:
    g = np.clip(np.round(gray01 * 255), 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def _coords():
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    return x, y


def grating(freq: float, angle_deg: float, contrast: float = 0.4) -> np.ndarray:
    x, y = _coords()
    t = np.deg2rad(angle_deg)
    return 0.5 + contrast * np.cos(2 * np.pi * freq * (x * np.cos(t) + y * np.sin(t)))


def zone_plate() -> np.ndarray:
    x, y = _coords()
    r2 = (x - SIZE / 2) ** 2 + (y - SIZE / 2) ** 2
    return 0.5 + 0.5 * np.cos(np.pi * r2 / (2 * SIZE))  # local frequency r/(2*SIZE): 0 .. ~0.35 at the edge


def siemens_star(spokes: int = 36) -> np.ndarray:
    x, y = _coords()
    return (np.sin(spokes * np.arctan2(y - SIZE / 2, x - SIZE / 2)) > 0).astype(np.float64) * 0.8 + 0.1


def line_pairs(period: int) -> np.ndarray:
    x, _ = _coords()
    return np.where((x.astype(int) // (period // 2)) % 2 == 0, 0.1, 0.9)


def checkerboard(cell: int) -> np.ndarray:
    x, y = _coords()
    return np.where(((x.astype(int) // cell) + (y.astype(int) // cell)) % 2 == 0, 0.15, 0.85)


def band_noise(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    noise = rng.standard_normal((SIZE, SIZE))
    fy, fx = np.meshgrid(np.fft.fftfreq(SIZE), np.fft.fftfreq(SIZE), indexing="ij")
    r = np.hypot(fx, fy)
    filtered = np.real(np.fft.ifft2(np.fft.fft2(noise) * ((r >= low) & (r < high))))
    return 0.5 + 0.2 * filtered / (filtered.std() + 1e-12)


def build_detail_suite() -> Dataset:
    rng = np.random.default_rng(SEED)
    items = []
    for angle in GRATING_ORIENTATIONS:
        for f in GRATING_FREQUENCIES:
            items.append(Item(f"grating/f{f:.2f}_a{angle}", _to_uint8_rgb(grating(f, angle)),
                              {"pattern": "grating", "frequency": f, "orientation": angle}))
    items.append(Item("zone_plate", _to_uint8_rgb(zone_plate()), {"pattern": "zone_plate"}))
    items.append(Item("siemens_star", _to_uint8_rgb(siemens_star()), {"pattern": "siemens_star"}))
    for period in (2, 4, 8):
        items.append(Item(f"line_pairs/p{period}", _to_uint8_rgb(line_pairs(period)), {"pattern": "line_pairs", "period": period}))
    for cell in (1, 2, 4, 8):
        items.append(Item(f"checkerboard/c{cell}", _to_uint8_rgb(checkerboard(cell)), {"pattern": "checkerboard", "cell": cell}))
    for low, high in ((0.05, 0.15), (0.15, 0.3), (0.3, 0.5)):
        items.append(Item(f"noise/{low:.2f}-{high:.2f}", _to_uint8_rgb(np.clip(band_noise(rng, low, high), 0, 1)),
                          {"pattern": "band_noise", "band": [low, high]}))
    for name in ("brick", "grass", "gravel"):
        tex = transform.resize(getattr(data, name)(), (SIZE, SIZE), anti_aliasing=True, preserve_range=True)
        items.append(Item(f"texture/{name}", _to_uint8_rgb(tex / 255.0), {"pattern": "texture"}))
    return Dataset("detail", "builtin", VERSION, items)
