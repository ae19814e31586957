"""docTR's PARSeq, the word recognizer of TokBench's text protocol (``--ocr parseq``).

TokBench (``eval_text.py``) reads every ground-truth word with docTR's
``parseq(pretrained=True, vocab=VOCABS["french"])`` at its default input of 3 x 32 x 128:

* **crop**: the exact box, ``image[y0:y1, x0:x1]`` in integer pixels (docTR's ``extract_crops``
  on absolute boxes), as floats in [0, 1];
* **resize** (docTR's ``Resize((32, 128), preserve_aspect_ratio=True)``): a crop whose
  height/width ratio exceeds 32/128 goes to height 32 and width ``max(int(32 / ratio), 1)``,
  otherwise to width 128 and height ``max(int(128 * ratio), 1)`` (a crop of exactly that ratio
  straight to 32 x 128); bilinear with antialiasing; zero padding on the right and bottom;
* **normalize** with the model's mean and std, then greedy decoding (docTR's post-processor).

The weights are docTR's release file (``parseq-56125471.pt``), fetched with
``tokbench weights fetch --metrics parseq`` into the standard weights folder and checked
against the SHA-256 prefix in its name before use; it is read with ``weights_only=True``.
docTR itself (``pip install "tokbench[parseq]"``) is imported only when PARSeq is used.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch

from tokbench import weights
from tokbench.provenance import file_digest

INPUT_HW = (32, 128)
VOCAB = "french"
BATCH = 64  # word crops per recognizer batch
INSTALL_HINT = 'pip install "tokbench[parseq]"  (python-doctr)'


class ParseqUnavailableError(RuntimeError):
    """docTR is not installed, or the PARSeq weights file is not the published one."""


def require_doctr():
    """docTR's recognition models and vocabularies; `ParseqUnavailableError` with the install hint otherwise."""
    try:
        from doctr.datasets import VOCABS
        from doctr.models import recognition
    except ImportError as err:
        raise ParseqUnavailableError(f"--ocr parseq needs docTR ({err.name} is missing): {INSTALL_HINT}") from err
    return recognition, VOCABS


def verified_weights(weights_dir: str | os.PathLike | None = None) -> Path:
    """The PARSeq weights file after checking its SHA-256 against the published prefix.

    Missing: `tokbench.weights.MissingWeightsError` naming the file and the folder it goes in.
    """
    path = weights.require(["parseq"], weights_dir, skippable=False)["parseq"]
    stat = path.stat()
    return _checked(path, weights.WEIGHT_FILES["parseq"].sha256_prefix, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _checked(path: Path, prefix: str, size: int, mtime_ns: int) -> Path:
    """``path`` if its SHA-256 starts with ``prefix`` (hashed once per file version and process)."""
    digest = file_digest(path, "sha256")
    if not digest.startswith(prefix):
        raise ParseqUnavailableError(f"PARSeq weights {path} have SHA-256 {digest[:16]}..., expected {prefix}... "
                                     "(corrupt or another release); delete it and run "
                                     "'tokbench weights fetch --metrics parseq'")
    return path


def build_model(weights_path: str | os.PathLike | None, device: str = "cpu") -> torch.nn.Module:
    """TokBench's PARSeq (French vocabulary, 3 x 32 x 128), with ``weights_path``'s parameters
    (``None``: random init, for tests)."""
    recognition, vocabs = require_doctr()
    model = recognition.parseq(pretrained=False, vocab=vocabs[VOCAB], input_shape=(3, *INPUT_HW))
    if weights_path is not None:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model.to(device).eval()


@functools.lru_cache(maxsize=4)
def load_recognizer(weights_dir: str | None = None, device: str = "cpu") -> torch.nn.Module:
    """The checked, pretrained recognizer (built once per process and device)."""
    return build_model(verified_weights(weights_dir), device)


def resize_crop(crop_3hw: torch.Tensor) -> torch.Tensor:
    """docTR's aspect-preserving resize of one word crop to 3 x 32 x 128 (see the module docstring)."""
    from torchvision.transforms import functional as F

    H, W = INPUT_HW
    ratio = crop_3hw.shape[-2] / crop_3hw.shape[-1]
    if ratio == H / W:
        size = (H, W)
    elif ratio > H / W:
        size = (H, max(int(H / ratio), 1))
    else:
        size = (max(int(W * ratio), 1), W)
    out = F.resize(crop_3hw, list(size), F.InterpolationMode.BILINEAR, antialias=True)
    return torch.nn.functional.pad(out, (0, W - out.shape[-1], 0, H - out.shape[-2]))


def crop_words(image_HW3: np.ndarray, boxes: list[list[int]]) -> list[torch.Tensor]:
    """The exact box crops as float ``(3, h, w)`` in [0, 1]; an empty box is a 1 x 1 black crop."""
    crops = []
    for x0, y0, x1, y1 in boxes:
        crop = image_HW3[int(y0) : int(y1), int(x0) : int(x1)]
        if crop.size == 0:
            crop = np.zeros((1, 1, 3), np.uint8)
        crops.append(torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float() / 255)
    return crops


@torch.inference_mode()
def read_words_with(model: torch.nn.Module, image_HW3: np.ndarray, boxes: list[list[int]]) -> list[str]:
    """What ``model`` reads in each box of ``image_HW3`` (uint8 ``(H, W, 3)``)."""
    device = next(model.parameters()).device
    mean = torch.tensor(model.cfg["mean"], device=device)[:, None, None]
    std = torch.tensor(model.cfg["std"], device=device)[:, None, None]
    crops = [resize_crop(c) for c in crop_words(image_HW3, boxes)]
    words: list[str] = []
    for start in range(0, len(crops), BATCH):
        x = (torch.stack(crops[start : start + BATCH]).to(device) - mean) / std
        words.extend(word for word, _ in model(x, return_preds=True)["preds"])
    return words


def read_words(image_HW3: np.ndarray, boxes: list[list[int]], device: str = "cpu",
               weights_dir: str | None = None) -> list[str]:
    """What the pretrained PARSeq reads in each box."""
    return read_words_with(load_recognizer(weights_dir, device), image_HW3, boxes)


def recognizer_id() -> str:
    """What the results record as the recognizer."""
    import doctr

    return f"doctr {doctr.__version__} parseq vocab={VOCAB} (sha256 {weights.WEIGHT_FILES['parseq'].sha256_prefix}...)"
