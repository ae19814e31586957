"""The reference set that samples are scored against: an image folder or an ADM reference batch.

* **ADM reference batch** (``.npz``, e.g. ``VIRTUAL_imagenet256_labeled.npz``): ``arr_0`` uint8
  ``(N, H, W, 3)`` plus ``mu``/``sigma`` (and ``mu_s``/``sigma_s`` for sFID, not used). FID uses
  the file's own ``mu``/``sigma``, so gFID lines up with papers' numbers; precision/recall use
  features of ``arr_0``. Without ``mu``/``sigma`` the statistics come from those features.
* **Image folder**: features of every image (recursive, sorted). Images are scored as they are
  (Inception resizes them to 299x299): prepare them as the samples were (e.g. center-cropped
  to 256x256).

Features are computed once and cached as ``.npz`` in the reference cache
(`reference_cache_dir`: ``--ref-cache``, else ``$TOKBENCH_CACHE/gen_references``, else
``~/.cache/tokbench/gen_references``), one file per (reference path, feature extractor). The
cache holds a fingerprint of the reference's file list, sizes and modification times plus
the extractor's id; it is reused when the fingerprint matches and recomputed (and replaced
atomically) otherwise. Everything is read with ``allow_pickle=False``.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tokbench.atomic import atomic_path
from tokbench.generation.scoring import (DEFAULT_BATCH_SIZE, FeatureFn, extract_features, extractor_id,
                                         feature_statistics)
from tokbench.generation.sources import Samples, open_samples

CACHE_FORMAT = "tokbench-gen-reference-1"


@dataclass(frozen=True, eq=False)
class Reference:
    """Reference features and FID statistics, with what identifies them."""

    name: str
    kind: str  # "folder", "adm_npz" or "features"
    num_images: int
    features: np.ndarray = field(repr=False)  # (N, F) float32 pool features (precision/recall)
    mu: np.ndarray = field(repr=False)  # (F,) float64
    sigma: np.ndarray = field(repr=False)  # (F, F) float64
    stats_source: str = "features"  # or "npz mu/sigma"
    path: str | None = None
    fingerprint: str | None = None  # cache key: file list + sizes + mtimes + extractor
    content_sha256: str | None = None  # SHA-256 of the images' bytes (portable across machines)
    extractor_id: str | None = None
    image_sizes: dict = field(default_factory=dict)
    from_cache: bool = False

    @classmethod
    def from_features(cls, features_NF: np.ndarray, name: str = "features") -> "Reference":
        """A reference made of given pool features (statistics computed from them)."""
        features = np.asarray(features_NF, dtype=np.float32)
        mu, sigma = feature_statistics(features)
        return cls(name=name, kind="features", num_images=int(features.shape[0]), features=features, mu=mu, sigma=sigma)

    def describe(self) -> dict:
        """JSON-ready description for a results file's ``extra``."""
        return {"name": self.name, "kind": self.kind, "path": self.path, "num_images": self.num_images,
                "fingerprint": self.fingerprint, "content_sha256": self.content_sha256,
                "statistics": self.stats_source, "feature_extractor": self.extractor_id,
                "image_sizes": self.image_sizes}


def reference_cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Where reference features are cached (see the module docstring)."""
    if override:
        return Path(override)
    root = os.environ.get("TOKBENCH_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"),
                                                             "tokbench")
    return Path(root) / "gen_references"


def cache_file(cache_dir: Path, source: Samples, extractor: str) -> Path:
    key = hashlib.sha256(f"{source.path.resolve()}\0{extractor}".encode()).hexdigest()[:16]
    return cache_dir / f"{source.name}-{key}.npz"


def _read_cache(path: Path, fingerprint: str) -> dict | None:
    """The cached entry if it is readable and its fingerprint matches; None otherwise."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != CACHE_FORMAT or str(z["fingerprint"]) != fingerprint:
                return None
            features = z["features"]
            if features.ndim != 2 or features.shape[0] < 1:
                return None
            return {"features": features, "content_sha256": str(z["content_sha256"]),
                    "image_sizes": json.loads(str(z["image_sizes"]))}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None  # absent, torn or from another version: recompute


def _write_cache(path: Path, fingerprint: str, features: np.ndarray, content_sha256: str, image_sizes: dict) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, format=np.array(CACHE_FORMAT), fingerprint=np.array(fingerprint), features=features,
                 content_sha256=np.array(content_sha256), image_sizes=np.array(json.dumps(image_sizes)))


def adm_statistics(path: Path, feature_dim: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``mu``/``sigma`` of an ADM reference batch (None when absent), checked against ``feature_dim``."""
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        if not {"mu", "sigma"} & keys:
            return None
        if not {"mu", "sigma"} <= keys:
            raise ValueError(f"{path}: has {'mu' if 'mu' in keys else 'sigma'} but not the other; "
                             "an ADM reference batch holds both")
        mu, sigma = z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
    if mu.shape != (feature_dim,) or sigma.shape != (feature_dim, feature_dim):
        raise ValueError(f"{path}: mu {mu.shape} / sigma {sigma.shape} do not match the {feature_dim}-d features of "
                         f"the feature extractor (expected ({feature_dim},) and ({feature_dim}, {feature_dim}))")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{path}: mu/sigma contain NaN or infinite values")
    return mu, sigma


def load_reference(path: str | os.PathLike, feature_fn: FeatureFn, *, batch_size: int = DEFAULT_BATCH_SIZE,
                   cache_dir: str | os.PathLike | None = None) -> Reference:
    """Open an image folder or an ADM reference batch as a `Reference`, with cached features."""
    source = open_samples(path, use_manifest=False)
    extractor = extractor_id(feature_fn)
    fingerprint = source.listing_fingerprint(extractor)
    cached_at = cache_file(reference_cache_dir(cache_dir), source, extractor)
    entry = _read_cache(cached_at, fingerprint)
    from_cache = entry is not None
    if entry is None:
        features, _ = extract_features(source.batches(batch_size), feature_fn, progress="reference features")
        entry = {"features": features, "content_sha256": source.content_sha256, "image_sizes": source.image_sizes}
        _write_cache(cached_at, fingerprint, features, source.content_sha256, source.image_sizes)
    features = entry["features"].astype(np.float32)
    stats = adm_statistics(source.path, features.shape[1]) if source.kind == "npz" else None
    stats_source = "npz mu/sigma" if stats is not None else "features"
    mu, sigma = stats if stats is not None else feature_statistics(features)
    return Reference(name=source.name, kind="adm_npz" if source.kind == "npz" else "folder",
                     num_images=int(features.shape[0]), features=features, mu=mu, sigma=sigma,
                     stats_source=stats_source, path=str(source.path), fingerprint=fingerprint,
                     content_sha256=entry["content_sha256"], extractor_id=extractor,
                     image_sizes=entry["image_sizes"], from_cache=from_cache)
