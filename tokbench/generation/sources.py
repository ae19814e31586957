"""Image sets to score, streamed in uint8 batches: a folder, an ADM ``.npz``, or in-memory arrays.

* A folder: its images (recursive, sorted; hidden files skipped), or the files its
  ``manifest.json`` lists (written by ``tokbench gen sample``; see `read_manifest`).
* An ADM sample/reference batch ``.npz``: ``arr_0`` uint8 ``(N, H, W, 3)``. It is read from the
  zip member in slices of rows, never loaded whole (50,000 256-px images are 9.8 GB) and never
  unpickled (object arrays are refused).
* An iterable of uint8 ``(H, W, 3)`` images or ``(B, H, W, 3)`` batches.

`Samples.batches` hashes the pixels/bytes it reads, so a set's content SHA-256 comes with one pass.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Iterable, Iterator, Union

import numpy as np

from tokbench.imageio import IMAGE_SUFFIXES, BadImageError, read_image

ImageSource = Union[str, os.PathLike, Iterable[np.ndarray]]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "tokbench-samples"
MANIFEST_VERSION = 1
MANIFEST_KEYS = ("generator", "tokenizer", "sampling", "num_samples", "resolution", "files")
NPZ_IMAGES = "arr_0"


def check_images(batch: np.ndarray, where: str) -> np.ndarray:
    """``batch`` as uint8 ``(B, H, W, 3)``; a single ``(H, W, 3)`` image becomes a batch of one."""
    batch = np.asarray(batch)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"{where}: expected uint8 RGB images (N, H, W, 3), got dtype {batch.dtype} "
                         f"shape {tuple(batch.shape)}")
    return batch


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted by relative path; hidden files skipped)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The folder's ``manifest.json`` (format ``tokbench-samples``, version 1), checked; None if absent."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable JSON manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: expected a manifest with \"format\": \"{MANIFEST_FORMAT}\"")
    if manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{path}: manifest version {manifest.get('version')!r} is not supported "
                         f"(this tokbench reads version {MANIFEST_VERSION})")
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ValueError(f"{path}: manifest lacks {', '.join(missing)}")
    files = manifest["files"]
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ValueError(f"{path}: \"files\" must be a list of paths relative to the folder")
    if manifest["num_samples"] != len(files):
        raise ValueError(f"{path}: num_samples is {manifest['num_samples']} but {len(files)} files are listed")
    for name in files:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(f"{path}: file {name!r} must be a path inside the folder")
    return manifest


def _npz_member(zf: zipfile.ZipFile, path: Path, key: str) -> str:
    member = f"{key}.npy"
    if member not in zf.namelist():
        raise ValueError(f"{path}: no {key!r} array in the .npz (found {', '.join(zf.namelist()) or 'nothing'})")
    return member


def npz_header(f, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an ``.npy`` stream's header, refusing object arrays and Fortran order."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"{where}: .npy format version {version} is not supported (1.0 or 2.0 expected)")
    if dtype.hasobject:
        raise ValueError(f"{where}: holds Python objects; only plain arrays are read (nothing is unpickled)")
    if fortran:
        raise ValueError(f"{where}: is stored in Fortran order; save it C-ordered (np.ascontiguousarray)")
    return tuple(shape), dtype


def npz_image_shape(path: str | os.PathLike, key: str = NPZ_IMAGES) -> tuple[int, ...]:
    """Shape of the image array ``key`` in an ``.npz``, checked to be uint8 ``(N, H, W, 3)`` with N >= 1."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf, zf.open(_npz_member(zf, path, key)) as f:
            shape, dtype = npz_header(f, f"{path}:{key}")
    except zipfile.BadZipFile:
        raise ValueError(f"{path}: not an .npz file (not a zip archive)") from None
    if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"{path}:{key}: expected uint8 RGB images (N, H, W, 3), got dtype {dtype} shape {shape}")
    if shape[0] == 0:
        raise ValueError(f"{path}:{key}: holds no images")
    return shape


def iter_npz_images(path: str | os.PathLike, batch_size: int, key: str = NPZ_IMAGES) -> Iterator[np.ndarray]:
    """uint8 ``(B, H, W, 3)`` slices of an ``.npz`` image array, read straight from the zip member."""
    path = Path(path)
    shape = npz_image_shape(path, key)
    row = int(np.prod(shape[1:]))
    with zipfile.ZipFile(path) as zf, zf.open(_npz_member(zf, path, key)) as f:
        npz_header(f, f"{path}:{key}")
        for start in range(0, shape[0], batch_size):
            count = min(batch_size, shape[0] - start)
            data = f.read(count * row)
            if len(data) != count * row:
                raise ValueError(f"{path}:{key}: truncated (expected {shape[0]} images, data ends at {start})")
            yield np.frombuffer(data, dtype=np.uint8).reshape(count, *shape[1:])


def _rebatch(images: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Group consecutive same-size images into batches of at most ``batch_size``."""
    pending: list[np.ndarray] = []
    for image in images:
        if pending and (len(pending) == batch_size or pending[0].shape != image.shape):
            yield np.stack(pending)
            pending = []
        pending.append(image)
    if pending:
        yield np.stack(pending)


class Samples:
    """An image set opened for scoring (see the module docstring).

    After `batches` has been run to the end, ``content_sha256`` (the SHA-256 of every file's
    relative path and bytes, or of the array shapes and pixels) and ``image_sizes``
    (``"HxW"`` -> count) describe what was read.
    """

    def __init__(self, kind: str, name: str, path: Path | None = None, files: list[Path] | None = None,
                 manifest: dict | None = None, arrays: Iterable[np.ndarray] | None = None,
                 num_images: int | None = None):
        self.kind, self.name, self.path, self.files = kind, name, path, files
        self.manifest, self._arrays, self.num_images = manifest, arrays, num_images
        self.content_sha256: str | None = None
        self.image_sizes: dict[str, int] = {}

    def listing_fingerprint(self, salt: str = "") -> str:
        """SHA-256 of the file list with sizes and modification times (cheap: no file is read) and
        ``salt`` (e.g. the feature extractor): a cache key that changes when a file does."""
        if self.path is None:
            raise ValueError("in-memory images have no file listing to fingerprint")
        digest = hashlib.sha256(f"{self.kind}\0{salt}\0".encode())
        for p in self.files if self.files is not None else [self.path]:
            st = p.stat()
            rel = p.relative_to(self.path).as_posix() if self.files is not None else p.name
            digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def _images(self, digest) -> Iterator[np.ndarray]:
        if self.kind == "folder":
            for p in self.files:
                try:
                    data = p.read_bytes()
                    image = read_image(p)
                except (OSError, BadImageError) as err:
                    raise ValueError(f"{p}: {err}") from None
                digest.update(p.relative_to(self.path).as_posix().encode() + b"\0" + data)
                yield image
        else:
            for i, batch in enumerate(self._arrays):
                batch = check_images(batch, f"{self.name} item {i}")
                digest.update(str(batch.shape).encode() + batch.tobytes())
                yield from batch

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """uint8 ``(B, H, W, 3)`` batches of at most ``batch_size`` same-size images, in order."""
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        digest = hashlib.sha256()
        sizes: dict[str, int] = {}
        count = 0
        if self.kind == "npz":
            source = iter_npz_images(self.path, batch_size)
            batches = (digest.update(str(b.shape).encode() + b.tobytes()) or b for b in source)
        else:
            batches = _rebatch(self._images(digest), batch_size)
        for batch in batches:
            key = f"{batch.shape[1]}x{batch.shape[2]}"
            sizes[key] = sizes.get(key, 0) + len(batch)
            count += len(batch)
            yield batch
        if count == 0:
            raise ValueError(f"{self.name}: holds no images")
        self.num_images, self.content_sha256, self.image_sizes = count, digest.hexdigest(), sizes


def open_samples(source: ImageSource | Samples, use_manifest: bool = True) -> Samples:
    """Open ``source`` (folder, ``.npz`` or arrays) for scoring, checking what can be checked up front."""
    if isinstance(source, Samples):
        return source
    if not isinstance(source, (str, os.PathLike)):
        return Samples("arrays", "arrays", arrays=source)
    path = Path(source)
    if path.is_dir():
        manifest = read_manifest(path) if use_manifest else None
        if manifest is not None:
            files = [path / name for name in manifest["files"]]
            absent = [str(p) for p in files if not p.is_file()]
            if absent:
                raise ValueError(f"{path / MANIFEST} lists {len(absent)} files that are not there "
                                 f"(first: {absent[0]})")
        else:
            files = list_images(path)
        if not files:
            raise ValueError(f"{path}: no images found (expected image files such as .png, or an ADM .npz)")
        return Samples("folder", path.name, path=path, files=files, manifest=manifest, num_images=len(files))
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise ValueError(f"{path}: expected a folder of images or an ADM .npz batch (arr_0: uint8 N x H x W x 3)")
        return Samples("npz", path.name, path=path, num_images=npz_image_shape(path)[0])
    raise FileNotFoundError(f"{path}: no such folder or .npz file")
