"""``tokbench gen encode``'s engine: stream images through a tokenizer into a token dataset.

The format is described in `tokbench.generation.token_data`. How the engine writes it:

* **Streamed**: images are decoded, resized and center-cropped in DataLoader workers, one
  batch at a time; memory is bounded by the batch, not the dataset (only the file list and
  the labels, a few bytes per image, are held whole).
* **Sharded**: under ``torchrun`` each rank takes a contiguous share of the images still to
  encode and writes its own rows of the memory-mapped ``tokens.npy`` (no rank writes
  another's rows), so the result does not depend on the number of ranks.
* **Resumable**: after each batch a rank flushes its rows to disk, then atomically rewrites
  its progress file (``progress/``, image ranges done). A rerun reads every progress file
  and encodes only what is missing; a batch cut off before its progress was written is
  simply encoded again. ``meta.json`` says ``"complete": true`` only after every rank has
  finished; rerunning a complete dataset is a no-op, and a rerun with another tokenizer,
  resolution, flip, file list or labels is refused rather than mixing tokens.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from tokbench.atomic import atomic_path, atomic_write_text
from tokbench.distributed import barrier, rank_and_world
from tokbench.generation.image_labels import LabelledImages, labelled_images
from tokbench.generation.token_data import (FORMAT, LABELS_NAME, META_NAME, PROGRESS_DIR, TOKENS_NAME, VERSION,
                                            check_encodable, read_meta, token_dtype, token_shape,
                                            tokens_to_rows)
from tokbench.imageio import BadImageError, read_image, resize_center_crop, uint8_to_tensor

MIN_RESOLUTION = 8


@dataclass
class EncodeSummary:
    """What one call of `encode_dataset` did (on this rank)."""

    out: Path
    num_images: int
    num_items: int
    encoded_images: int  # by this rank in this call
    already_done: int  # images found encoded by an earlier run
    complete: bool


class CenterCrops(Dataset):
    """``(crop (3, R, R) float32, image index, error)`` for the given image indices.

    ``error`` is ``""`` for a readable image; for an unreadable file it is the reason (with a
    zero crop), so that the main process raises one clear error naming the file.
    """

    def __init__(self, root: Path, files: list[str], indices: np.ndarray, resolution: int) -> None:
        self.root, self.files, self.indices, self.resolution = root, files, indices, resolution

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int, str]:
        index = int(self.indices[k])
        try:
            x_3HW = uint8_to_tensor(read_image(self.root / self.files[index]))
        except (BadImageError, OSError) as err:
            return torch.zeros(3, self.resolution, self.resolution), index, str(err) or type(err).__name__
        return resize_center_crop(x_3HW, self.resolution).contiguous(), index, ""


def _tokenizer_identity(spec: str, tokenizer) -> dict[str, Any]:
    from tokbench.provenance import checkpoint_sha256

    stored = str(Path(spec).resolve()) if Path(spec).exists() else spec
    return {"spec": stored, "sha256": checkpoint_sha256(spec), "family": tokenizer.family, "kind": tokenizer.kind,
            "config": json.loads(json.dumps(tokenizer.config, default=str))}


def _expected_meta(spec: str, tokenizer, images: LabelledImages, resolution: int, flip: bool) -> dict[str, Any]:
    stride = max(1, int(tokenizer.stride))
    padded = -(-resolution // stride) * stride
    layout = tokenizer.layout_for(padded, padded)
    check_encodable(layout)
    per_image = 2 if flip else 1
    return {"format": FORMAT, "version": VERSION, "complete": False,
            "tokenizer": _tokenizer_identity(spec, tokenizer), "layout": layout.to_dict(),
            "token_shape": token_shape(layout), "token_dtype": token_dtype(layout),
            "resolution": resolution, "flip": flip, "num_images": len(images.files),
            "num_items": len(images.files) * per_image, "classes": images.classes,
            "labels_source": images.source, "files": images.files}


def _same_tokenizer(old: dict, new: dict) -> bool:
    if old.get("sha256") or new.get("sha256"):
        same_weights = old.get("sha256") == new.get("sha256")
    else:
        same_weights = old.get("spec") == new.get("spec")
    return same_weights and all(old.get(k) == new.get(k) for k in ("family", "kind", "config"))


def _check_matches(out: Path, old: dict, new: dict) -> None:
    """Refuse to continue or reuse a dataset made with other settings, saying which differ."""
    redo = f"use another --out, or delete {out} to encode again"
    if not _same_tokenizer(old["tokenizer"], new["tokenizer"]):
        o, n = old["tokenizer"], new["tokenizer"]
        raise ValueError(f"{out} holds tokens of tokenizer {o.get('spec')!r} ({o.get('family')}, weights SHA-256 "
                         f"{o.get('sha256')}); this run uses {n['spec']!r} ({n['family']}, weights SHA-256 "
                         f"{n['sha256']}); {redo}")
    for key, what in (("resolution", "--resolution"), ("flip", "--flip"), ("labels_source", "labels from"),
                      ("classes", "classes"), ("layout", "token layout"), ("token_shape", "token shape"),
                      ("token_dtype", "token dtype")):
        if old.get(key) != new[key]:
            raise ValueError(f"{out} was encoded with {what} = {old.get(key)!r}; this run asks for {new[key]!r}; {redo}")
    if old.get("files") != new["files"]:
        old_files, new_files = old.get("files") or [], new["files"]
        first = next((i for i, (a, b) in enumerate(zip(old_files, new_files)) if a != b), min(len(old_files), len(new_files)))
        raise ValueError(f"{out} was encoded from {len(old_files)} images, the data folder now lists {len(new_files)} "
                         f"(first difference at image {first}: {old_files[first] if first < len(old_files) else None!r} "
                         f"vs {new_files[first] if first < len(new_files) else None!r}); {redo}")


def _existing_meta(out: Path) -> dict | None:
    """The dataset already at ``out``, None for a new or empty folder; refuses any other folder."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder; expected a new folder or a token dataset")
    if (out / META_NAME).is_file():
        return read_meta(out)
    if any(out.iterdir()):
        raise ValueError(f"--out {out}: the folder exists, is not empty and holds no token dataset ({META_NAME}); "
                         "expected a new or empty folder, or one written by 'tokbench gen encode'")
    return None


def _read_done(out: Path, num_images: int) -> np.ndarray:
    """Which images every progress file together says are on disk."""
    done = np.zeros(num_images, dtype=bool)
    folder = out / PROGRESS_DIR
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            ranges = json.loads(path.read_text())["done"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: unreadable progress file ({err}); delete {out} to encode again") from None
        for start, end in ranges:
            if not 0 <= start <= end <= num_images:
                raise ValueError(f"{path}: progress range [{start}, {end}) is outside the {num_images} images")
            done[start:end] = True
    return done


def _create_files(out: Path, meta: dict, labels_B: np.ndarray) -> None:
    """Rank 0: ``meta.json`` (incomplete), ``labels.npy`` and an empty ``tokens.npy`` where missing."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / META_NAME, json.dumps(meta, indent=1))
    tokens_path = out / TOKENS_NAME
    shape, dtype = (meta["num_items"], *meta["token_shape"]), np.dtype(meta["token_dtype"])
    if tokens_path.is_file():
        existing = np.load(tokens_path, mmap_mode="r")
        ok = tuple(existing.shape) == shape and existing.dtype == dtype
        del existing
        if not ok:
            raise ValueError(f"{tokens_path}: does not have the shape {shape} {dtype} that {META_NAME} describes; "
                             f"delete {out} to encode again")
    else:
        shutil.rmtree(out / PROGRESS_DIR, ignore_errors=True)  # rows of a lost token file are not done
        with atomic_path(tokens_path, suffix=".npy") as tmp:
            empty = open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)  # sparse until rows are written
            empty.flush()
            del empty
    rows = np.repeat(labels_B, 2 if meta["flip"] else 1)
    labels_path = out / LABELS_NAME
    if not (labels_path.is_file() and np.array_equal(np.load(labels_path), rows)):
        with atomic_path(labels_path, suffix=".npy") as tmp:
            np.save(tmp, rows)
    (out / PROGRESS_DIR).mkdir(exist_ok=True)


def _merge(ranges: list[list[int]], start: int, end: int) -> None:
    if ranges and ranges[-1][1] == start:
        ranges[-1][1] = end
    else:
        ranges.append([start, end])


class RowWriter:
    """Writes rows of a C-ordered ``.npy`` file in place and syncs them to disk. Positioned
    writes rather than a writable memory map: the pages written never count against this
    process's memory, and nothing but the batch is held."""

    def __init__(self, path: Path) -> None:
        header = np.load(path, mmap_mode="r")  # reads the header; maps without touching pages
        self.offset, self.dtype, row_shape = int(header.offset), header.dtype, header.shape[1:]
        del header
        self.row_bytes = int(np.prod(row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.fd = os.open(path, os.O_RDWR)

    def write(self, first_rows: np.ndarray, block_BK: np.ndarray) -> None:
        """Write ``block_BK[b]`` (``K`` consecutive rows) from row ``first_rows[b]`` on; one
        write per run of adjacent blocks."""
        data = np.ascontiguousarray(block_BK, dtype=self.dtype)
        k = data.shape[1]
        start = 0
        for b in range(1, len(first_rows) + 1):
            if b == len(first_rows) or first_rows[b] != first_rows[b - 1] + k:
                payload = memoryview(data[start:b].tobytes())
                position = self.offset + int(first_rows[start]) * self.row_bytes
                while payload:
                    written = os.pwrite(self.fd, payload, position)
                    payload, position = payload[written:], position + written
                start = b

    def sync(self) -> None:
        os.fsync(self.fd)

    def __enter__(self) -> "RowWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def encode_dataset(tokenizer: str, data: str | os.PathLike, out: str | os.PathLike, *, resolution: int = 256,
                   flip: bool = False, labels: str | os.PathLike | None = None, batch_size: int = 32,
                   device: str = "cpu", workers: int = 0, progress: bool = True,
                   on_batch: Callable[[int], None] | None = None) -> EncodeSummary:
    """Encode every image under ``data`` once into the token dataset ``out`` (see `token_data`).

    ``tokenizer``: a spec `tokbench.load` accepts (checkpoint directory, ``.ckpt``, or a
    registered name such as ``"vq:size=tiny"``; add ``weights=PATH`` for a public one).
    ``labels``: a ``file,label`` CSV instead of the class subfolders. Under ``torchrun``
    (process group initialized) each rank encodes its share. ``on_batch(n)`` is called after
    the ``n``-th batch of this call is safely on disk. Resumes an interrupted run; a no-op on
    a complete dataset made with the same settings; refuses one made with other settings.
    """
    import tokbench

    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < MIN_RESOLUTION:
        raise ValueError(f"--resolution must be an integer >= {MIN_RESOLUTION} pixels, got {resolution!r}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"--workers must be >= 0, got {workers}")
    rank, world = rank_and_world()
    data, out = Path(data), Path(out)
    images = labelled_images(data, labels)
    model = tokbench.load(tokenizer).eval().to(device)
    meta = _expected_meta(tokenizer, model, images, resolution, flip)
    old = _existing_meta(out)
    if old is not None:
        _check_matches(out, old, meta)
        if old.get("complete"):
            return EncodeSummary(out, meta["num_images"], meta["num_items"], 0, meta["num_images"], True)
    barrier()  # every rank has looked at the folder before rank 0 changes it
    if rank == 0:
        _create_files(out, meta, images.labels)
    barrier()

    done = _read_done(out, meta["num_images"])
    todo = np.flatnonzero(~done)
    mine = np.array_split(todo, world)[rank]
    per_image = 2 if flip else 1
    dtype, shape = meta["token_dtype"], tuple(meta["token_shape"])
    progress_path = out / PROGRESS_DIR / f"rank{rank:04d}-{time.time_ns()}-{os.getpid()}.json"
    ranges: list[list[int]] = []
    loader = DataLoader(CenterCrops(data, images.files, mine, resolution), batch_size=batch_size, shuffle=False,
                        num_workers=workers, pin_memory=device.startswith("cuda"))
    bar = tqdm(total=len(mine), unit="img", disable=not progress or rank != 0,
               desc=f"encoding (rank 0 of {world})" if world > 1 else "encoding")
    encoded = 0
    try:
        with RowWriter(out / TOKENS_NAME) as writer:
            for n, (x_B3RR, index_B, errors) in enumerate(loader, start=1):
                bad = [(int(i), e) for i, e in zip(index_B, errors) if e]
                if bad:
                    i, reason = bad[0]
                    raise BadImageError(f"{data / images.files[i]}: {reason}; fix or replace this file (same name) "
                                        "and rerun the same command to resume (removing it changes the image list, "
                                        "which needs a new --out)")
                if flip:  # image, its mirror, next image, ...: rows in the dataset's order
                    x_B3RR = torch.stack([x_B3RR, x_B3RR.flip(-1)], dim=1).flatten(0, 1)
                rows = tokens_to_rows(model.encode(x_B3RR.to(device, non_blocking=True)), dtype)
                if rows.shape[1:] != shape:
                    raise RuntimeError(f"the tokenizer gave tokens of shape {rows.shape[1:]}, expected {shape} "
                                       f"(from its layout at {resolution}x{resolution})")
                index_B = index_B.numpy()
                writer.write(index_B * per_image, rows.reshape(len(index_B), per_image, *shape))
                writer.sync()  # rows on disk before the progress file says so
                for i in index_B.tolist():
                    _merge(ranges, i, i + 1)
                atomic_write_text(progress_path, json.dumps({"done": ranges}))
                encoded += len(index_B)
                bar.update(len(index_B))
                if on_batch is not None:
                    on_batch(n)
    finally:  # an error stops this rank; torchrun stops the others, and every finished batch is kept
        bar.close()
        del loader
    barrier()  # every rank's rows and progress are on disk
    missing = np.flatnonzero(~_read_done(out, meta["num_images"]))
    barrier()  # every rank has read the progress before rank 0 removes it
    if len(missing):
        raise RuntimeError(f"{len(missing)} image(s) were not encoded (first: {images.files[missing[0]]}); "
                           "rerun the same command to resume")
    if rank == 0:
        atomic_write_text(out / META_NAME, json.dumps({**meta, "complete": True}, indent=1))
        shutil.rmtree(out / PROGRESS_DIR, ignore_errors=True)
    barrier()
    return EncodeSummary(out, meta["num_images"], meta["num_items"], encoded, int(done.sum()), True)
