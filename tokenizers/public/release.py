"""What every public-tokenizer adapter shares: reading released files, option rules,
and the registry factory that carries a release's facts.

A public name (``llamagen-vq16``) is a registry factory ``build(weights=None, **options)``
that returns a tokenizer of one of tokbench's families (or TiTok's own class) at the
release configuration, with the released weights when ``weights`` is given. Options that
the weights (or the release) fix may not be changed; the error says which and why.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open

from tokbench.checkpoint import CheckpointError, read_listing, read_safetensors, torch_load_safely

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


@dataclass(frozen=True)
class Release:
    """Facts about one public tokenizer (for the registry, ``tokbench info`` and the README)."""

    name: str
    family: str
    files: str  # released file names
    published: str  # where
    preprocessing: str  # the upstream's own evaluation preprocessing
    fixed: tuple[str, ...] = ()  # options no override may change, with or without weights
    # A latent diffusion model's view of continuous latents: (latents - shift) * scale. Recorded
    # (``tokenizer.upstream``), never applied: tokbench's latents are the posterior mean as is.
    latent_shift: float | None = None
    latent_scale: float | None = None


def read_any(path: str | os.PathLike) -> Any:
    """A released file: safetensors as a dict of tensors, anything else through `torch_load_safely`."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    return torch_load_safely(path)


def _safetensors_shapes(path: str) -> dict[str, torch.Size]:
    try:
        with safe_open(path, "pt") as f:
            return {key: torch.Size(f.get_slice(key).get_shape()) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({err})") from err


@lru_cache(maxsize=8)
def _cached_index(path: str, mtime_ns: int) -> dict[str, tuple[int, ...]]:
    listing = _safetensors_shapes(path) if path.endswith(".safetensors") else read_listing(path)
    index: dict[str, tuple[int, ...]] = {}
    for key, value in flatten(listing):
        shape = value.shape if isinstance(value, torch.Tensor) else value if isinstance(value, torch.Size) else ()
        index[key] = tuple(shape)
    return index


def file_index(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Keys of a released file and their tensor shapes (``()`` for other entries); one level of
    container (``model``, ``state_dict`` ...) is spelled ``outer/inner``. Read once per file, from
    its header (safetensors) or core's `read_listing` (pickles): no tensor data is read and
    nothing in the file runs."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or directory")
    return _cached_index(str(p), p.stat().st_mtime_ns)


def file_keys(path: str | os.PathLike) -> frozenset[str]:
    return frozenset(file_index(path))


def flatten(blob: Any) -> list[tuple[str, Any]]:
    if not isinstance(blob, dict):
        return []
    items = []
    for k, v in blob.items():
        if isinstance(v, dict) and v and all(isinstance(t, (torch.Tensor, torch.Size)) for t in list(v.values())[:4]):
            items.extend((f"{k}/{inner}", t) for inner, t in v.items())
        else:
            items.append((str(k), v))
    return items


def state_dict_of(blob: Any, path: str | os.PathLike, containers: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded file: the first of ``containers`` present, else the blob itself."""
    if not isinstance(blob, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(blob).__name__}")
    for key in containers:
        if isinstance(blob.get(key), dict):
            return blob[key]
    tensors = {k: v for k, v in blob.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: no state dict found (looked for {', '.join(containers) or 'tensors'} "
                              f"among top-level keys {sorted(map(str, blob))[:8]})")
    return blob


def drop(state: dict[str, torch.Tensor], prefixes: tuple[str, ...] = (), keys: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Without training-only entries (``loss.*``, usage statistics ...)."""
    return {k: v for k, v in state.items() if not k.startswith(prefixes) and k not in keys}


def the_one_file(weights: Path, suffixes: tuple[str, ...], what: str) -> Path:
    """``weights`` itself, or the single file with one of ``suffixes`` in the folder it names
    (a `CheckpointError` naming ``what`` was expected and what the folder holds otherwise)."""
    if not weights.is_dir():
        return weights
    found = sorted(p for p in weights.iterdir() if p.suffix in suffixes)
    if len(found) != 1:
        raise CheckpointError(f"{weights}: expected one {what} in the folder, found {[p.name for p in found] or 'none'}")
    return found[0]


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read JSON ({err})") from err


def options_read_off(infer: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``infer(*args)``: the options a state dict's tensors fix, or none when it is not that
    layout (KeyError/IndexError) -- the key check that follows names what differs."""
    try:
        return infer(*args)
    except (KeyError, IndexError):
        return {}


def refuse_fixed_overrides(release: Release, release_options: dict[str, Any], overrides: dict[str, Any]) -> None:
    """A `ValueError` for an override of an option the release fixes (``release.fixed``), with or
    without weights."""
    for key in overrides:
        if key in release.fixed:
            raise ValueError(f"{release.name}: option {key} cannot be changed: the release fixes "
                             f"{key}={release_options[key]!r}")


def resolve_options(name: str, release: dict[str, Any], from_weights: dict[str, Any], overrides: dict[str, Any],
                    source: str = "") -> dict[str, Any]:
    """Release options, updated by what the weights say, then by the caller's overrides.

    An override of an option the weights fix, to another value, is a `ValueError` that says so.
    """
    options = {**release, **from_weights}
    for key, value in overrides.items():
        if key in from_weights and _differs(value, from_weights[key]):
            raise ValueError(f"{name}: option {key}={value!r} cannot be changed: the weights {source} fix "
                             f"{key}={from_weights[key]!r}")
    options.update(overrides)
    return options


def _differs(a: Any, b: Any) -> bool:
    norm = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
    return norm(a) != norm(b)


def public_factory(release: Release, build: Callable[..., Any],
                   recognizes: Callable[[Path], bool] | None = None,
                   stand_ins: tuple[str, ...] = ()) -> Callable[..., Any]:
    """The registry factory of one public name: ``factory(weights=None, **options)``.

    ``recognizes(path)``: whether a file or folder is this release (from a key listing, never a full
    read); ``stand_ins``: the non-tensor globals its container holds (for core's `read_listing`).
    """

    def factory(weights: str | os.PathLike | None = None, **options: Any):
        tokenizer = build(release, None if weights is None else Path(weights), **options)
        # Not part of the config: a converted checkpoint is a plain family checkpoint.
        tokenizer.upstream = {"name": release.name, "weights": None if weights is None else str(weights),
                              "preprocessing": release.preprocessing}
        if release.latent_scale is not None:
            tokenizer.upstream["diffusion_latents"] = {"shift": release.latent_shift or 0.0,
                                                       "scale": release.latent_scale}
        return tokenizer

    factory.release = release
    factory.recognizes = recognizes
    factory.stand_ins = tuple(stand_ins)
    factory.__doc__ = f"{release.name}: {release.family} family at the release configuration; weights={release.files}."
    return factory
