"""tokbench checkpoints: a directory with ``config.json`` and ``model.safetensors``.

``config.json`` names the registered ``family`` and the options its factory takes, so
``registry.create`` rebuilds the module before the weights are read. Files are written
to a temporary name and renamed into place, so an interrupted save never leaves a
half-written checkpoint. Pickle-based files (``.pt``/``.ckpt``) are only read with
``torch.load(weights_only=True)``: they cannot run code.
"""
from __future__ import annotations

import json
import os
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tokbench import registry
from tokbench.atomic import atomic_path, atomic_write_text
from tokbench.version import __version__

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
EMA_WEIGHTS_NAME = "ema.safetensors"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: names the file and what is wrong with it."""


def _atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def _contiguous_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; clone keeps tied weights apart.
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def save_pretrained(tokenizer, directory: str | os.PathLike, *, ema_state: dict | None = None,
                    extra_config: dict[str, Any] | None = None) -> Path:
    """Save ``tokenizer`` (and optional EMA weights) as a tokbench checkpoint directory."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "family": tokenizer.family,
        "config": tokenizer.config,
        "tokbench_version": __version__,
        "format_version": FORMAT_VERSION,
        **(extra_config or {}),
    }
    meta = {"format": "pt", "tokbench_version": __version__}
    _atomic_save_safetensors(_contiguous_state(tokenizer.state_dict()), out / WEIGHTS_NAME, meta)
    if ema_state is not None:
        _atomic_save_safetensors(_contiguous_state(ema_state), out / EMA_WEIGHTS_NAME, meta)
    # The config goes last: a directory with a config.json is a complete checkpoint.
    atomic_write_text(out / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a tokbench checkpoint directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(config, dict) or "family" not in config:
        raise CheckpointError(f"{path}: expected a JSON object with a 'family' key")
    if not isinstance(config.get("config", {}), dict):
        raise CheckpointError(f"{path}: 'config' must be a JSON object of the family's options")
    return config


def available_memory_bytes() -> int | None:
    """Memory the system can still give (Linux ``MemAvailable``); None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def build_within_memory(build: Callable[[], torch.nn.Module], source: str) -> torch.nn.Module:
    """``build()``, first run on the meta device (no memory) to size its weights and buffers: a
    config whose module would not fit the memory available is refused before anything is
    allocated (a ``config.json`` with ``ch: 200000`` asked for 1.44 TB).

    A module that cannot be built on the meta device is built for real, unchecked.
    """
    try:
        with torch.device("meta"):
            probe = build()
    except (TypeError, ValueError, KeyError):
        raise  # the real build would say the same; the caller names the config
    except Exception:  # noqa: BLE001 -- e.g. a .item() on a meta tensor during construction
        probe = None
    if probe is not None:
        tensors = [*probe.parameters(), *probe.buffers()]
        need = sum(t.numel() * t.element_size() for t in tensors)
        available = available_memory_bytes()
        if available is not None and need > available:
            parameters = sum(t.numel() for t in probe.parameters())
            raise CheckpointError(f"{source}: the config describes a model of {parameters:,} parameters "
                                  f"({need / 2**30:,.1f} GiB), more than the {available / 2**30:,.1f} GiB of memory "
                                  "available; check its sizes (e.g. ch, dim, layers)")
    return build()


def build_from_config(config: dict[str, Any], source: str):
    family = config["family"]
    try:
        factory = registry.get_factory(family)
    except KeyError as err:
        raise CheckpointError(f"{source}: unknown tokenizer family {family!r}; registered: {', '.join(registry.names())}") from err
    try:
        return build_within_memory(lambda: factory(**config.get("config", {})), source)
    except (TypeError, ValueError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{source}: config does not fit family {family!r}: {err}") from err


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing weights file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({err})") from err


def load_weights_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a state dict, reporting every missing, unexpected or mis-shaped key."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mis_shaped = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(own[k].shape) != tuple(state[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if mis_shaped:
        problems.append(f"shape mismatches {mis_shaped}")
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the config: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def load_directory(directory: str | os.PathLike, *, ema: bool = False):
    directory = Path(directory)
    config = read_config(directory)
    tokenizer = build_from_config(config, str(directory / CONFIG_NAME))
    weights = directory / (EMA_WEIGHTS_NAME if ema else WEIGHTS_NAME)
    if weights.is_file() or len(tokenizer.state_dict()) > 0:
        load_weights_strict(tokenizer, read_safetensors(weights), str(weights))
    return tokenizer.eval()


class ReleasedClassStandIn:
    """Stands in for a class that a released checkpoint names only as a dict key.

    PyTorch Lightning 1.x stored its callbacks' states keyed by the callback *class*
    (``{ModelCheckpoint: {...}}``), so taming's ``last.ckpt`` holds a reference to
    ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``. Unpickling that
    reference yields this inert class; nothing is constructed or called.

    It also stands in for the objects a release pickles beside its tensors (a training
    config, argparse's namespace; see `torch_load_safely`'s ``stand_ins``): building one
    accepts and discards any arguments and items; only the pickled ``state`` (plain data,
    itself made of such stand-ins where it holds objects) is kept for a loader to read.
    """

    state: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


# Globals that released tokenizer files need beyond weights_only's defaults: exactly these,
# each mapped to the inert stand-in. Any other global is refused by name. LlamaGen-style
# training scripts (Hita's ``vq_train.py``) save their ``argparse.Namespace`` as ``args``: it
# becomes a stand-in holding the plain values (any non-default global inside is still refused).
RELEASE_SAFE_GLOBALS = ("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint", "argparse.Namespace")


def torch_load_safely(path: str | os.PathLike, stand_ins: tuple[str, ...] = (), *, shapes_only: bool = False) -> Any:
    """``torch.load`` that can never execute code from the file (weights_only=True).

    The globals in `RELEASE_SAFE_GLOBALS`, and those a caller names in ``stand_ins`` (the
    non-tensor objects one release's container is known to hold), resolve to an inert
    stand-in class; a file that needs any other global is refused with the global's name.

    ``shapes_only``: every tensor on the ``meta`` device (names, shapes, dtypes); a zip-format
    file's tensor data is then not read at all (a legacy-format file is still read through).
    """
    allowed = [(ReleasedClassStandIn, name) for name in RELEASE_SAFE_GLOBALS + tuple(stand_ins)]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(str(path), map_location="meta" if shapes_only else "cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError on bad zip, EOFError ...
        raise CheckpointError(
            f"{path}: cannot be read as a weights-only PyTorch file ({type(err).__name__}: {_first_reason(err)}); "
            "tokbench never unpickles arbitrary objects"
        ) from err


def _first_reason(err: Exception) -> str:
    """One line of a (often multi-line) torch.load error: the unpickler's own reason where it gives one."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if "WeightsUnpickler error" in line or "Unsupported global" in line]
    return (named or lines or [type(err).__name__])[0]


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """A zip with one ``<root>/data.pkl`` and ``<root>/code/`` (cheap: reads the zip directory only)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(n.endswith("/data.pkl") and n.count("/") == 1 for n in names) and any("/code/" in n for n in names)


def listing_stand_ins() -> tuple[str, ...]:
    """The container globals that registered public tokenizers declare (their factories'
    ``stand_ins``): a key listing maps these, and only these beyond `RELEASE_SAFE_GLOBALS`, to
    the inert stand-in, so that recognising a release never needs its loader's full read."""
    names: set[str] = set()
    for name in registry.names():
        try:
            factory = registry.get_factory(name)
        except Exception:  # noqa: BLE001 -- a plug-in that fails to import declares nothing
            continue
        names.update(getattr(factory, "stand_ins", None) or ())
    return tuple(sorted(names))


@lru_cache(maxsize=16)
def _cached_listing(path: str, mtime_ns: int, size: int, stand_ins: tuple[str, ...]) -> Any:
    return torch_load_safely(path, stand_ins, shapes_only=True)


def read_listing(path: str | os.PathLike) -> Any:
    """A pickle-based file's contents with every tensor on the ``meta`` device: what its keys and
    shapes say, read with weights_only's unpickler (plus `listing_stand_ins`), so nothing in the
    file is executed and a global outside those is refused by name (`CheckpointError`). Read once
    per file version and shared by core `load` and the public recognisers; do not modify it.
    A TorchScript archive lists as ``{}``: torch.load would refuse it (its tensors have their own reader)."""
    if is_torchscript_archive(path):
        return {}
    stat = Path(path).stat()
    return _cached_listing(str(path), stat.st_mtime_ns, stat.st_size, listing_stand_ins())


def load_lightning_checkpoint(path: str | os.PathLike, *, ema: bool = True):
    """A ``.ckpt`` written by ``tokbench train``.

    It holds ``tokbench`` = ``{"family", "config"}`` and a ``state_dict`` whose tokenizer
    weights sit under ``tokenizer.`` (EMA weights, when kept, under ``ema_tokenizer.``).
    """
    return _load_training_blob(torch_load_safely(path), path, ema=ema)


def is_training_blob(blob: Any) -> bool:
    return isinstance(blob, dict) and "tokbench" in blob and "state_dict" in blob


def _load_training_blob(blob: Any, path: str | os.PathLike, *, ema: bool):
    if not is_training_blob(blob):
        raise CheckpointError(f"{path}: not a tokbench training checkpoint (no 'tokbench' and 'state_dict' entries)")
    tokenizer = build_from_config(blob["tokbench"], str(path))
    state = blob["state_dict"]
    prefix = "ema_tokenizer." if ema and any(k.startswith("ema_tokenizer.") for k in state) else "tokenizer."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    load_weights_strict(tokenizer, weights, f"{path} [{prefix}*]")
    return tokenizer.eval()


NAMED_INIT_SEED = 0


def public_candidates(path: Path) -> list[str]:
    """Registered public tokenizers whose released format ``path`` has (their factories'
    ``recognizes``)."""
    found: list[str] = []
    for name in registry.names():
        factory = registry.get_factory(name)
        recognizes = getattr(factory, "recognizes", None)
        if recognizes is None:
            continue
        try:
            hit = bool(recognizes(path))
        except CheckpointError:
            raise
        except Exception:  # a detector that cannot read this format: not a match
            hit = False
        if hit:
            found.append(name)
    return found


def load_public(path: Path, not_found: str, **overrides: Any):
    """A released file (or folder) of a public tokenizer, recognised from its keys."""
    candidates = public_candidates(path)
    if not candidates:
        raise CheckpointError(not_found)
    if len(candidates) > 1:
        raise CheckpointError(
            f"{path}: could be any of {', '.join(candidates)}; name it: tokbench.load(NAME, weights=PATH) "
            "or --tokenizer NAME --weights PATH")
    return _create_named(candidates[0], weights=str(path), **overrides)


def _create_named(spec: str, **overrides: Any):
    """A registered tokenizer, initialised from a fixed seed without touching the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(NAMED_INIT_SEED)
        return registry.create(spec, **overrides).eval()


def _is_tokbench_config(path: Path) -> bool:
    try:
        return isinstance(obj := json.loads(path.read_text()), dict) and "family" in obj
    except (OSError, ValueError):
        return path.is_file()  # unreadable: let read_config report it


def load(path_or_name: str | os.PathLike, *, ema: bool | None = None, **overrides: Any):
    """Load a tokenizer from a checkpoint directory, a ``.ckpt`` of ``tokbench train``,
    a registered name with options (``"jpeg:q=5"``, ``"vq:size=tiny"``), or a public
    tokenizer: ``load("llamagen-vq16", weights="vq_ds16_c2i.pt")``,
    ``load("llamagen-vq16:weights=vq_ds16_c2i.pt")``, or the released file (or folder) itself
    when its keys say unambiguously which public tokenizer it is. The keys come from a listing
    that runs nothing in the file and reads no tensor data (`read_listing`; a safetensors header;
    a TorchScript archive's ``data.pkl``); the chosen loader then reads the weights once.

    ``ema``: a directory's ``ema.safetensors`` instead of ``model.safetensors`` when True;
    for a ``.ckpt`` the EMA weights are used unless ``ema=False``.

    A registered name builds an untrained tokenizer, initialized from a fixed seed (the
    caller's random state is left as it was): every process -- each rank of a distributed
    ``tokbench eval``, a rerun -- gets the same weights, so their results agree.
    """
    path = Path(path_or_name)
    spec_name = str(path_or_name).partition(":")[0]
    if not path.exists() and spec_name in registry.names():  # also "llamagen-vq16:weights=PATH.pt"
        return _create_named(str(path_or_name), **overrides)
    if path.is_dir():
        config = path / CONFIG_NAME
        if _is_tokbench_config(config) or not (config.is_file() or public_candidates(path)):
            return load_directory(path, ema=bool(ema))
        return load_public(path, f"{config}: neither a tokbench checkpoint config (no 'family') nor the config "
                                 "of a known public tokenizer's release", **overrides)
    if path.is_file() and (path.suffix == ".jit" or is_torchscript_archive(path)):  # never torch.load'ed
        return load_public(path, f"{path}: not the released file of a known public tokenizer (a TorchScript archive "
                                 "whose tensors tokbench reads, never runs; a release split into several archives "
                                 "loads from its folder)", **overrides)
    if path.suffix in {".ckpt", ".pt", ".pth", ".bin"}:
        if not path.is_file():
            raise CheckpointError(f"{path}: no such file")
        # The keys decide, from a listing that reads no tensor data; the weights are read once, by
        # whichever loader the listing picks.
        if is_training_blob(read_listing(path)):
            return _load_training_blob(torch_load_safely(path), path, ema=ema is not False)
        return load_public(path, f"{path}: not a tokbench training checkpoint (no 'tokbench' and 'state_dict' "
                                 "entries) nor the released file of a known public tokenizer", **overrides)
    not_a_checkpoint = (
        f"{path}: not a checkpoint directory; expected a directory with {CONFIG_NAME} and {WEIGHTS_NAME}, "
        "a .ckpt from 'tokbench train', a public tokenizer's released file, or a registered tokenizer name"
    )
    if path.suffix == ".safetensors" and path.is_file():
        return load_public(path, not_a_checkpoint, **overrides)
    if path.suffix in {".safetensors", ".json"} or os.sep in str(path_or_name):
        raise CheckpointError(not_a_checkpoint)
    try:
        return _create_named(str(path_or_name), **overrides)
    except KeyError as err:
        raise CheckpointError(f"{path_or_name!s}: no such checkpoint and {err.args[0]}") from err
