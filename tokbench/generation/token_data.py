"""Token datasets: a folder of images encoded once by a tokenizer, for training generators.

``tokbench gen encode`` writes one (`tokbench.generation.token_encoding.encode_dataset`);
``tokbench gen fit`` reads it with `TokenDataset`. The folder ``TOKDIR`` holds:

``meta.json`` (written atomically; ``"complete": true`` only once every row is written)::

    {"format": "tokbench-token-dataset", "version": 1, "complete": bool,
     "tokenizer": {"spec": <what tokbench.load accepts: a checkpoint directory (absolute
                            path) or a registered name such as "vq:size=tiny">,
                   "sha256": <checkpoint_sha256 of the weights, or null>,
                   "family": str, "kind": "discrete"|"continuous", "config": {...}},
     "layout": TokenLayout.to_dict() (arrangement, shape, vocab_size or latent_channels,
                num_tokens, bits_per_image; scales for a "scales" layout),
     "token_shape": [L] (discrete) or [L, C] (continuous),
     "token_dtype": "int16"|"int32"|"float16",
     "resolution": int, "flip": bool, "num_images": int, "num_items": int,
     "classes": [class names in label order] or null,
     "labels_source": "folders"|"csv"|"none",
     "files": [relative image paths, image i = files[i]]}

``tokens.npy``: a ``.npy`` array (open it with ``numpy.load(..., mmap_mode="r")``) of shape
``(num_items, *token_shape)``.

* discrete tokens: ids in generation order (`tokbench.generation.sequence.to_sequence`:
  raster for a grid, coarse-to-fine for scales, as-is for a 1D sequence), ``int16`` when
  the vocabulary fits (``vocab_size <= 32767``), ``int32`` otherwise;
* continuous tokens (kind ``"continuous"``, e.g. the ``vae`` family): latents as
  ``float16`` ``(L, C)``, raster order over a ``grid`` latent map (``(C, h, w)`` ->
  ``(h*w, C)``), a ``sequence``'s ``(K, C)`` as it is.

``labels.npy``: ``int64`` ``(num_items,)``, the class of each row, ``-1`` for unconditional
data (`tokbench.generation.image_labels` says where labels come from).

Rows: image ``i`` (sorted relative paths) is row ``i * items_per_image``, where
``items_per_image`` is 2 with ``flip`` (its horizontally flipped copy is the next row) and
1 otherwise. Each image is resized (shorter side to ``resolution``, bicubic with
antialiasing) and center-cropped to ``resolution x resolution``, as ``tokbench eval`` does.

``progress/``: resume bookkeeping while the dataset is incomplete: one JSON file per rank
and run, ``{"done": [[start, end), ...]}`` image ranges whose rows are flushed to disk.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tokbench.generation.sequence import generation_order, to_sequence
from tokbench.tokens import TokenLayout, Tokens

if TYPE_CHECKING:
    from tokbench.tokenizer import Tokenizer

FORMAT = "tokbench-token-dataset"
VERSION = 1
META_NAME, TOKENS_NAME, LABELS_NAME, PROGRESS_DIR = "meta.json", "tokens.npy", "labels.npy", "progress"
INT16_MAX_VOCAB = 32767


def check_encodable(layout: TokenLayout) -> None:
    """Raise a clear ValueError for layouts a token dataset cannot hold."""
    if layout.arrangement == "bytes":
        raise ValueError("codec tokenizers (arrangement 'bytes': JPEG/WebP byte streams of varying length) have no "
                         "fixed-length tokens to generate; expected a discrete (grid, scales, sequence) or "
                         "continuous (grid, sequence) tokenizer")
    if layout.kind == "continuous" and layout.arrangement not in ("grid", "sequence"):
        raise ValueError(f"continuous tokens with a {layout.arrangement!r} layout are not supported; "
                         "expected a 'grid' or 'sequence' layout")
    if layout.kind == "discrete":
        generation_order(layout)  # ids beyond int32 (more than 2**31 of them) are refused there


def token_shape(layout: TokenLayout) -> list[int]:
    """``[L]`` for discrete tokens, ``[L, C]`` for continuous latents."""
    check_encodable(layout)
    if layout.kind == "discrete":
        return [layout.num_tokens]
    return [layout.num_tokens, int(layout.latent_channels)]  # type: ignore[arg-type]


def token_dtype(layout: TokenLayout) -> str:
    """``int16`` for vocabularies up to 32767, ``int32`` above, ``float16`` for latents."""
    check_encodable(layout)
    if layout.kind == "continuous":
        return "float16"
    return "int16" if int(layout.vocab_size) <= INT16_MAX_VOCAB else "int32"  # type: ignore[arg-type]


def tokens_to_rows(tokens: Tokens, dtype: str) -> np.ndarray:
    """A batch of tokens as stored rows ``(B, *token_shape)`` in ``dtype`` (numpy, on the CPU)."""
    layout = tokens.layout
    check_encodable(layout)
    if tokens.kind == "discrete":
        ids_BL = to_sequence(tokens).cpu()
        return ids_BL.numpy().astype(dtype)
    latents = tokens.latents.detach().float().cpu()
    if layout.arrangement == "grid":  # (B, C, h, w) -> (B, h*w, C), raster order
        B, C = latents.shape[:2]
        latents_BLC = latents.reshape(B, C, -1).transpose(1, 2)
    else:
        latents_BLC = latents
    rows = latents_BLC.numpy().astype(np.float16)
    if not np.isfinite(rows).all():
        peak = float(latents_BLC.abs().max())
        raise ValueError(f"latents do not fit float16 (largest magnitude {peak:.4g}; float16 holds up to 65504)")
    return rows


def read_meta(path: str | Path) -> dict[str, Any]:
    """``meta.json`` of a token dataset folder, checked to be this format and version."""
    path = Path(path)
    meta_path = path / META_NAME
    if not meta_path.is_file():
        raise ValueError(f"{path}: not a token dataset (no {META_NAME}); expected a folder written by "
                         "'tokbench gen encode'")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{meta_path}: cannot read JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: not a token dataset (format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                         f"expected {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"{meta_path}: token dataset version {meta.get('version')!r}; this tokbench reads version {VERSION}")
    return meta


def _load_array(path: Path) -> np.ndarray:
    """A ``.npy`` file memory-mapped, or a ValueError naming it (missing, truncated, not an array)."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path}: not a readable .npy array ({reason}); rerun 'tokbench gen encode' into a new "
                         "folder to write it again") from None


def split_rows(num_images: int, items_per_image: int, held_out_every: int) -> tuple[list[int], list[int]]:
    """``(train_rows, held_out_rows)``: every ``held_out_every``-th image is held out (images
    ``k-1, 2k-1, ...``, as the eval's generation task; the last image when there are fewer
    than ``k``), with all of its rows (both flips) on the same side."""
    if held_out_every < 2:
        raise ValueError(f"held_out_every must be >= 2 (1 would hold out every image), got {held_out_every}")
    if num_images < 2:
        raise ValueError(f"a train/held-out split needs at least 2 images, got {num_images}")
    held = [i for i in range(num_images) if i % held_out_every == held_out_every - 1] or [num_images - 1]
    held_set = set(held)
    rows = lambda images: [i * items_per_image + j for i in images for j in range(items_per_image)]  # noqa: E731
    return rows(i for i in range(num_images) if i not in held_set), rows(held)


class TokenDataset(Dataset):
    """A complete token dataset: ``dataset[i] -> (tokens, label)``.

    ``tokens`` is an int64 ``(L,)`` tensor of ids in generation order, or a float32 ``(L, C)``
    tensor of latents; ``label`` an int (``-1`` when unconditional). The token file is
    memory-mapped on first access, so the dataset pickles cheaply into DataLoader workers.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.meta = read_meta(self.path)
        if not self.meta.get("complete"):
            raise ValueError(f"{self.path}: the token dataset is incomplete (encoding was interrupted); rerun the same "
                             "'tokbench gen encode' command to finish it")
        meta_path = self.path / META_NAME
        try:  # fields of the wrong type (hand-edited or foreign files) are named, not an AttributeError later
            self.layout: TokenLayout = TokenLayout.from_dict(self.meta["layout"])
            self.items_per_image: int = 2 if self.meta["flip"] else 1
            expected = (int(self.meta["num_items"]), *(int(n) for n in self.meta["token_shape"]))
            dtype = np.dtype(self.meta["token_dtype"])
            vocab = int(self.layout.vocab_size) if self.layout.kind == "discrete" else None
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"{meta_path}: the layout, flip, num_items, token_shape or token_dtype field is missing "
                             f"or of the wrong type ({type(err).__name__}: {err}); expected what 'tokbench gen encode' "
                             "writes") from None
        self.kind: str = self.layout.kind
        self._tokens: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        tokens = self._open()
        if tuple(tokens.shape) != expected or tokens.dtype != dtype:
            raise ValueError(f"{self.path / TOKENS_NAME}: shape {tuple(tokens.shape)} {tokens.dtype}, but {META_NAME} "
                             f"says {expected} {self.meta['token_dtype']}")
        if self._labels.shape != (expected[0],):
            raise ValueError(f"{self.path / LABELS_NAME}: shape {self._labels.shape}, expected ({expected[0]},)")
        if vocab is not None and len(tokens):
            low, high = int(tokens.min()), int(tokens.max())
            if low < 0 or high >= vocab:
                raise ValueError(f"{self.path / TOKENS_NAME}: token ids span [{low}, {high}], outside the vocabulary "
                                 f"[0, {vocab}) of its layout in {META_NAME}")

    def _open(self) -> np.ndarray:
        if self._tokens is None:
            self._tokens = _load_array(self.path / TOKENS_NAME)
            self._labels = _load_array(self.path / LABELS_NAME)
        return self._tokens

    def fingerprint(self) -> str:
        """SHA-256 over ``meta.json``, ``tokens.npy`` and ``labels.npy``: which data a generator saw
        (a run resumed on other tokens is refused by it)."""
        from tokbench.provenance import file_sha256

        parts = [file_sha256(self.path / name) for name in (META_NAME, TOKENS_NAME, LABELS_NAME)]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_tokens"] = state["_labels"] = None  # reopened lazily in the worker
        return state

    @property
    def tokenizer_spec(self) -> str:
        """What `tokbench.load` accepts to rebuild the tokenizer (e.g. to decode samples)."""
        return self.meta["tokenizer"]["spec"]

    @property
    def num_classes(self) -> int:
        """Number of classes; 0 for unconditional data."""
        return len(self.meta["classes"]) if self.meta["classes"] else 0

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"] or [])

    @property
    def num_images(self) -> int:
        return int(self.meta["num_images"])

    @property
    def files(self) -> list[str]:
        return list(self.meta["files"])

    @property
    def labels(self) -> np.ndarray:
        """int64 ``(len(self),)``."""
        self._open()
        return np.asarray(self._labels)

    def __len__(self) -> int:
        return int(self.meta["num_items"])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        tokens = self._open()
        if not -len(self) <= index < len(self):
            raise IndexError(f"row {index} out of range for a token dataset of {len(self)} rows")
        row = tokens[index]
        if self.kind == "discrete":
            return torch.from_numpy(row.astype(np.int64)), int(self._labels[index])
        return torch.from_numpy(row.astype(np.float32)), int(self._labels[index])

    def image_of_row(self, row: int) -> int:
        """The image index a row belongs to (``files[image]`` is its file)."""
        return row // self.items_per_image

    def split(self, held_out_every: int) -> tuple[list[int], list[int]]:
        """``(train_rows, held_out_rows)`` split by image; see `split_rows`."""
        return split_rows(self.num_images, self.items_per_image, held_out_every)

    def load_tokenizer(self, device: str = "cpu") -> "Tokenizer":
        """The tokenizer that made the tokens, checked against the recorded weights' SHA-256."""
        return load_checked_tokenizer(self.tokenizer_spec, self.meta["tokenizer"].get("sha256"),
                                      f"the token dataset {self.path} was encoded with", device)


def load_checked_tokenizer(spec: str, recorded_sha256: str | None, recorded_for: str, device: str = "cpu") -> "Tokenizer":
    """``tokbench.load(spec)``, refused when its weights' SHA-256 is not the recorded one (tokens
    decode to noise through other weights); ``recorded_for`` says where the hash was recorded."""
    import tokbench  # the package's `load` (its __init__ imports the registry)
    from tokbench.provenance import checkpoint_sha256

    sha = checkpoint_sha256(spec)
    if recorded_sha256 and sha and sha != recorded_sha256:
        raise ValueError(f"tokenizer {spec}: weights SHA-256 {sha[:12]}... differ from those {recorded_for} "
                         f"({recorded_sha256[:12]}...); its tokens would decode to noise")
    return tokbench.load(spec).eval().to(device)
