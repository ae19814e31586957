"""``text``: rendered text with known ground truth and word boxes, plus real text photos.

Rendered pages vary the font (Debian's DejaVu and Liberation families), size (small print
to headline), polarity (dark on light, light on dark), colour and background texture, and
layout (paragraphs, short signs, receipt-like columns with digits and punctuation). Every
word's box is recorded so that recognition can be scored word by word. scikit-image's
``page`` and ``text`` photos are letterboxed to 256x256 and scored against the OCR of the
original (they have no ground truth).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage import data

from tokbench.tasks.data import Dataset, Item

VERSION = "1"
SIZE = 256
SEED = 7
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation"))
FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSans-Bold.ttf", "LiberationSans-Regular.ttf",
         "LiberationSerif-Regular.ttf", "LiberationSans-Bold.ttf")
MONO_FONTS = ("DejaVuSansMono.ttf", "LiberationMono-Regular.ttf")
WORDS = ("the quick brown fox jumps over lazy dog market street coffee table window garden river "
         "morning evening station ticket number price open closed north south paper letter music "
         "light water stone silver golden orange purple winter summer bridge castle forest island "
         "planet rocket camera screen signal travel museum library doctor kitchen bottle pocket").split()
RECEIPT_ITEMS = ("BREAD", "MILK", "APPLES", "COFFEE", "CHEESE", "RICE", "TEA", "EGGS", "SUGAR", "BUTTER")
# (foreground, background) colour pairs: dark on light, light on dark, coloured.
PALETTES = (((20, 20, 20), (250, 250, 250)), ((240, 240, 240), (25, 25, 35)), ((20, 40, 120), (250, 240, 200)),
            ((120, 20, 20), (225, 240, 225)), ((250, 250, 210), (40, 90, 60)))


class FontMissingError(RuntimeError):
    pass


def font_path(name: str) -> Path:
    for folder in FONT_DIRS:
        if (folder / name).is_file():
            return folder / name
    raise FontMissingError(f"font {name} not found in {', '.join(map(str, FONT_DIRS))}; "
                           "install Debian's fonts-dejavu-core and fonts-liberation")


def _background(rng: np.random.Generator, colour, textured: bool) -> Image.Image:
    base = np.ones((SIZE, SIZE, 3)) * np.array(colour, dtype=np.float64)
    if textured:  # a soft gradient and mild grain, like paper or a painted wall
        y = np.linspace(-1, 1, SIZE)[:, None, None]
        base = base + 18 * y + rng.normal(0, 6, size=base.shape)
    return Image.fromarray(np.clip(np.round(base), 0, 255).astype(np.uint8))


def _draw_words(draw, lines: list[list[str]], font, size: int, x0: int, y0: int, fill, line_gap: float = 1.45):
    words = []
    y = y0
    for line in lines:
        x = x0
        for word in line:
            box = draw.textbbox((x, y), word, font=font)
            draw.text((x, y), word, font=font, fill=fill)
            words.append({"text": word, "box": [int(v) for v in box], "size_px": size})
            x = box[2] + int(size * 0.35)
        y += int(size * line_gap)
    return words


def _wrap(draw, words: list[str], font, width: int, size: int) -> list[list[str]]:
    lines, line = [], []
    for w in words:
        trial = " ".join(line + [w])
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = [w]
        else:
            line.append(w)
    return lines + ([line] if line else [])


def _canvas(rng: np.random.Generator, font_name: str, size: int, palette, textured: bool):
    """A fresh background in the palette's colour, a drawing context, the font, the ink colour."""
    fg, bg = palette
    img = _background(rng, bg, textured)
    return img, ImageDraw.Draw(img), ImageFont.truetype(str(font_path(font_name)), size), fg


def render_paragraph(rng, font_name: str, size: int, palette, textured: bool) -> tuple[np.ndarray, dict]:
    img, draw, font, fg = _canvas(rng, font_name, size, palette, textured)
    max_lines = max(1, (SIZE - 24) // int(size * 1.45))
    n_words = min(40, max_lines * max(1, (SIZE - 24) // (size * 4)))
    words = [str(w) for w in rng.choice(WORDS, size=n_words)]
    lines = _wrap(draw, words, font, SIZE - 24, size)[:max_lines]
    boxes = _draw_words(draw, lines, font, size, 12, 12, fg)
    return np.asarray(img), {"layout": "paragraph", "font": font_name, "words": boxes}


def render_sign(rng, font_name: str, size: int, palette, textured: bool) -> tuple[np.ndarray, dict]:
    img, draw, font, fg = _canvas(rng, font_name, size, palette, textured)
    words = [str(w).upper() for w in rng.choice(WORDS, size=int(rng.integers(1, 3)))]
    lines = [[w] for w in words]
    height = int(size * 1.3) * len(lines)
    y0 = (SIZE - height) // 2
    boxes = []
    for i, line in enumerate(lines):
        width = draw.textlength(line[0], font=font)
        boxes += _draw_words(draw, [line], font, size, int((SIZE - width) // 2), y0 + i * int(size * 1.3), fg)
    return np.asarray(img), {"layout": "sign", "font": font_name, "words": boxes}


def render_receipt(rng, font_name: str, size: int, palette, textured: bool) -> tuple[np.ndarray, dict]:
    img, draw, font, fg = _canvas(rng, font_name, size, palette, textured)
    n = min(8, (SIZE - 30) // int(size * 1.5) - 1)
    items = [str(s) for s in rng.choice(RECEIPT_ITEMS, size=n, replace=False)]
    prices = [f"{rng.integers(1, 20)}.{rng.integers(0, 100):02d}" for _ in items]
    total = f"{sum(float(p) for p in prices):.2f}"
    lines = [[a, b] for a, b in zip(items, prices)] + [["TOTAL", total]]
    boxes, y = [], 14
    for left, right in lines:
        boxes += _draw_words(draw, [[left]], font, size, 16, y, fg)
        width = draw.textlength(right, font=font)
        boxes += _draw_words(draw, [[right]], font, size, int(SIZE - 16 - width), y, fg)
        y += int(size * 1.5)
    return np.asarray(img), {"layout": "receipt", "font": font_name, "words": boxes}


def _text_of(meta: dict) -> str:
    """Ground-truth page text: words in reading order, lines joined by newlines."""
    lines, last_top = [], None
    for w in meta["words"]:
        top = w["box"][1]
        if last_top is None or abs(top - last_top) > w["size_px"] * 0.5:
            lines.append([])
            last_top = top
        lines[-1].append(w["text"])
    return "\n".join(" ".join(line) for line in lines)


def _letterboxed_photo(img: np.ndarray) -> np.ndarray:
    pil = Image.fromarray(img).convert("RGB")
    s = SIZE / max(pil.size)
    pil = pil.resize((max(1, round(pil.width * s)), max(1, round(pil.height * s))), Image.LANCZOS)
    canvas = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    canvas.paste(pil, ((SIZE - pil.width) // 2, (SIZE - pil.height) // 2))
    return np.asarray(canvas)


def build_text_suite() -> Dataset:
    rng = np.random.default_rng(SEED)
    items = []
    plans = []
    for i, size in enumerate((11, 13, 16, 20, 24)):
        for j in range(2):
            plans.append((render_paragraph, FONTS[(i + j) % len(FONTS)], size, PALETTES[(i + 2 * j) % len(PALETTES)], j == 1))
    for i, size in enumerate((32, 44, 56)):
        plans.append((render_sign, FONTS[(2 * i + 1) % len(FONTS)], size, PALETTES[i % len(PALETTES)], i == 2))
    for i, size in enumerate((13, 16)):
        plans.append((render_receipt, MONO_FONTS[i], size, PALETTES[(3 * i) % len(PALETTES)], i == 1))
    for k, (render, font, size, palette, textured) in enumerate(plans):
        image, meta = render(rng, font, size, palette, textured)
        meta.update({"text": _text_of(meta), "size_px": size, "textured": textured,
                     "polarity": "light_on_dark" if sum(palette[1]) < sum(palette[0]) else "dark_on_light"})
        items.append(Item(f"rendered/{k:02d}_{meta['layout']}_{size}px", image, meta))
    for name in ("page", "text"):
        items.append(Item(f"photo/{name}", _letterboxed_photo(getattr(data, name)()), {"layout": "photo"}))
    return Dataset("text", "builtin", VERSION, items)
