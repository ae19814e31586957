"""The tensors of a TorchScript archive (``torch.jit.save``'s ``.jit``/``.pt`` zip), read without running it.

A TorchScript archive is a zip: ``<root>/data.pkl`` pickles the module tree, ``<root>/data/<key>``
holds each tensor storage's raw bytes (``<root>/byteorder`` says their byte order), and
``<root>/code/`` the TorchScript source, which ``torch.jit.load`` would compile and run. This
reader never loads that code nor ``constants.pkl``: it unpickles ``data.pkl`` with an unpickler
that resolves exactly these globals --

* ``__torch__.<module path> <Class>``: a scripted module's class, made an inert `ScriptedModule`
  record whose state is a plain attribute dict;
* ``torch._utils _rebuild_tensor_v2``: rebuilt here from the storage bytes (``as_strided`` view);
* ``torch <Type>Storage``: a dtype marker for a storage;
* ``collections OrderedDict``: the (empty) backward-hook dicts of the tensors,

and refuses any other global by name, before anything is called. The result is the flat
``{dotted.name: tensor}`` of every parameter and buffer in the tree (buffers that a state dict
would leave out, e.g. non-persistent ones, included), as ``module.state_dict()`` names them.
"""
from __future__ import annotations

import os
import pickle
import sys
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from tokbench.checkpoint import CheckpointError

STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
SCRIPT_CLASS_PREFIX = "__torch__."


class ScriptedModule:
    """An inert stand-in for one scripted module (or other scripted object): its state dict only."""

    qualified_name = ""

    def __setstate__(self, state: Any) -> None:
        self.attributes = state if isinstance(state, dict) else {}


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


@lru_cache(maxsize=None)
def _record_class(qualified_name: str) -> type:
    return type(qualified_name.rsplit(".", 1)[-1], (ScriptedModule,), {"qualified_name": qualified_name})


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, root: str, materialize: bool) -> None:
        super().__init__(file)
        self.archive, self.root, self.materialize = archive, root, materialize
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith(SCRIPT_CLASS_PREFIX) or module == "__torch__":
            return _record_class(f"{module}.{name}")
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        if module == "collections" and name == "OrderedDict":
            return _empty_ordered_dict
        raise pickle.UnpicklingError(f"refused global {module}.{name} (a TorchScript archive's data.pkl names "
                                     "only scripted classes, tensors and storages)")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if key not in self.storages and not self.materialize:  # shapes only: no storage is read
            self.storages[key] = torch.empty(int(numel), dtype=storage_type.dtype, device="meta")
        if key not in self.storages:
            try:
                raw = self.archive.read(f"{self.root}/data/{key}")
            except KeyError as err:
                raise pickle.UnpicklingError(f"storage {key} is missing from the archive") from err
            dtype = storage_type.dtype
            flat = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            if flat.numel() != numel:
                raise pickle.UnpicklingError(f"storage {key} holds {flat.numel()} elements, data.pkl says {numel}")
            self.storages[key] = flat
        return self.storages[key]


def _empty_ordered_dict(*args: Any) -> dict:
    if args:
        raise pickle.UnpicklingError("OrderedDict with contents (only empty backward-hook dicts are expected)")
    return {}


def _rebuild_tensor(flat: Any, offset: Any, size: Any, stride: Any, *_: Any) -> torch.Tensor:
    if not isinstance(flat, torch.Tensor):
        raise pickle.UnpicklingError("a tensor rebuilt from something that is not an archive storage")
    view = flat.as_strided(tuple(size), tuple(stride), int(offset))
    return view if view.is_meta else view.clone()


def _archive_root(archive: zipfile.ZipFile, path: Path) -> str:
    roots = {name.split("/", 1)[0] for name in archive.namelist()
             if name.endswith("/data.pkl") and name.count("/") == 1}
    if len(roots) != 1:
        raise CheckpointError(f"{path}: not a TorchScript archive (expected one <root>/data.pkl, found {len(roots)})")
    return roots.pop()


def _flatten(obj: Any, prefix: str, out: dict[str, torch.Tensor], depth: int = 0) -> None:
    if depth > 64:
        raise CheckpointError("module tree nested deeper than 64 levels")
    for name, value in getattr(obj, "attributes", {}).items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, ScriptedModule):
            _flatten(value, f"{prefix}{name}.", out, depth + 1)


def read_torchscript_tensors(path: str | os.PathLike, *, materialize: bool = True) -> dict[str, torch.Tensor]:
    """Every tensor attribute of a TorchScript archive's module tree, by dotted name; nothing is executed.

    ``materialize=False`` reads ``data.pkl`` only and returns tensors on the ``meta`` device (names,
    shapes and dtypes, no values): cheap enough to recognise a release by its shapes.

    A `CheckpointError` (one line) when the file is not such an archive or its ``data.pkl`` names a
    global outside the allowed few.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as archive:
            root = _archive_root(archive, path)
            has_order = f"{root}/byteorder" in archive.namelist()
            order = archive.read(f"{root}/byteorder").decode().strip() if has_order else "little"
            if order != sys.byteorder:
                raise CheckpointError(f"{path}: tensors stored {order}-endian, this machine is {sys.byteorder}-endian")
            with archive.open(f"{root}/data.pkl") as pkl:
                tree = _RestrictedUnpickler(pkl, archive, root, materialize).load()
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, RuntimeError, TypeError, AttributeError,
            IndexError, KeyError, OverflowError) as err:  # whatever a malformed data.pkl makes the unpickler raise
        raise CheckpointError(f"{path}: cannot be read as a TorchScript archive ({type(err).__name__}: {err}); "
                              "tokbench reads only its tensors and never runs its code") from err
    if not isinstance(tree, ScriptedModule):
        raise CheckpointError(f"{path}: data.pkl does not hold a scripted module")
    tensors: dict[str, torch.Tensor] = {}
    _flatten(tree, "", tensors)
    return tensors

