"""``text-sizes``: rendered words whose sizes fill TokBench's small, medium and large buckets.

512x512 images; on each, lines of words at nine font sizes (12 to 52 px, in shuffled order),
so that TokBench's size ratio (box width / characters / longer image side) runs from about
0.012 to 0.06: at the 256 setting (the images downscaled by 2) the 12-17 px lines fall under
TokBench's smallest bucket and are dropped, and the rest fill small (0.02-0.03), medium
(0.03-0.04) and large (>= 0.04); at the 512 setting every line is in a bucket (0.01 / 0.02 /
0.03). Fonts: Debian's DejaVu and Liberation families (sans, serif, bold, mono); words in
lower, Title and UPPER case (TokBench's matching is case-sensitive); backgrounds plain,
textured, dark and coloured. Every word's box is the renderer's ink box (``textbbox``).
Deterministic: seeded, versioned.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tokbench.tasks.data import Dataset, Item
from tokbench.tasks.suites.text import PALETTES, WORDS, _text_of, font_path

VERSION = "1"
SIZE = 512
SEED = 14
FONT_SIZES = (12, 15, 19, 22, 25, 29, 33, 40, 52)
FONTS = ("DejaVuSans.ttf", "LiberationSerif-Regular.ttf", "DejaVuSans-Bold.ttf", "LiberationSans-Regular.ttf",
         "DejaVuSerif.ttf", "LiberationMono-Regular.ttf", "LiberationSans-Bold.ttf", "DejaVuSansMono.ttf")
MARGIN = 14
LINE_GAP = 1.3


def _background(rng: np.random.Generator, colour, textured: bool) -> Image.Image:
    base = np.ones((SIZE, SIZE, 3)) * np.array(colour, dtype=np.float64)
    if textured:  # a soft diagonal gradient and mild grain
        ramp = np.linspace(-1, 1, SIZE)
        base = base + 16 * (ramp[:, None, None] + ramp[None, :, None]) / 2 + rng.normal(0, 5, size=base.shape)
    return Image.fromarray(np.clip(np.round(base), 0, 255).astype(np.uint8))


def _cased(rng: np.random.Generator, word: str) -> str:
    style = rng.integers(0, 3)
    return word if style == 0 else word.title() if style == 1 else word.upper()


def render_sizes_page(rng: np.random.Generator, font_name: str, palette, textured: bool) -> tuple[np.ndarray, dict]:
    """One image: a line of words at each of `FONT_SIZES`, in shuffled order; words and ink boxes."""
    fg, bg = palette
    img = _background(rng, bg, textured)
    draw = ImageDraw.Draw(img)
    words, y = [], MARGIN
    for size in rng.permutation(FONT_SIZES):
        size = int(size)
        font = ImageFont.truetype(str(font_path(font_name)), size)
        x = MARGIN
        for _ in range(3):
            word = _cased(rng, str(rng.choice(WORDS)))
            box = draw.textbbox((x, y), word, font=font)
            if box[2] > SIZE - MARGIN:
                break
            draw.text((x, y), word, font=font, fill=fg)
            words.append({"text": word, "box": [int(v) for v in box], "size_px": size})
            x = box[2] + int(size * 0.6)
        y += int(size * LINE_GAP)
    return np.asarray(img), {"layout": "sizes", "font": font_name, "words": words}


def build_text_sizes_suite() -> Dataset:
    """Eight 512x512 pages, one font each, cycling through palettes and textures."""
    rng = np.random.default_rng(SEED)
    items = []
    for k, font in enumerate(FONTS):
        palette = PALETTES[k % len(PALETTES)]
        textured = k % 3 == 1
        image, meta = render_sizes_page(rng, font, palette, textured)
        meta.update({"text": _text_of(meta), "textured": textured,
                     "polarity": "light_on_dark" if sum(palette[1]) < sum(palette[0]) else "dark_on_light"})
        items.append(Item(f"sizes/{k:02d}_{font.rsplit('.', 1)[0]}", image, meta))
    return Dataset("text-sizes", "builtin", VERSION, items)
