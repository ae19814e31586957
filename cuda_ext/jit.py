"""JIT builds of the fused kernels, shared by the CPU and CUDA loaders.

- **One cache folder per environment and source hash**: ``<base>/<name>-<key>``, where the key
  hashes ``sys.prefix``, the Python, torch and CUDA versions, the compile flags and the bytes of
  every source file. Two virtualenvs never share (and so never rebuild) each other's build, and
  an edited source gets a new folder. ``<base>`` is ``TOKBENCH_EXT_DIR``, else
  ``$XDG_CACHE_HOME/tokbench/extensions`` (``~/.cache/tokbench/extensions``).
- **A finished build is imported directly** (its ``built.json`` marker beside the library):
  no ninja run and no lock, so a built kernel costs a process nothing.
- **One builder at a time, and waiting is bounded and said**: the builder holds an ``flock`` on
  ``build.lock`` (released by the kernel if the builder dies, unlike torch's own lock file);
  a process that finds it held prints one line, waits at most ``TOKBENCH_EXT_LOCK_TIMEOUT``
  seconds (default 300), then gives up (`LockTimeout`: the caller falls back to the PyTorch path
  with one warning). SIGINT and SIGTERM stop a waiting process even where a framework has
  installed handlers that would only note them (Lightning's SIGTERM handler does).
- **A build says so**: "building the fused CPU kernel (once, ≈1 min)…", then the elapsed time.
- **A failed build is remembered** (``failed.txt``): later processes fall back at once instead of
  recompiling for a minute each; ``tokbench build-ext`` retries.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import importlib.util
import json
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator

from tokbench.atomic import atomic_write_bytes

MARKER, FAILED, LOCK = "built.json", "failed.txt", "build.lock"
DEFAULT_LOCK_TIMEOUT_S = 300.0
POLL_S = 0.2


class LockTimeout(RuntimeError):
    """Another process held the build lock for longer than the bound."""


class EarlierBuildFailed(RuntimeError):
    """This environment's build of these sources failed before (see ``failed.txt``)."""


@dataclass(frozen=True)
class JitSpec:
    """What one JIT-built extension is: the inputs that decide its binary, and how to name it to a person."""

    name: str  # the Python module name
    sources: tuple[Path, ...]  # every file the build reads (headers too): their bytes are in the key
    flags: tuple[str, ...]  # compile flags, target architectures: anything else that changes the binary
    label: str  # for messages: "the fused CPU kernel"
    duration: str  # a first build's typical time, for the message: "≈1 min"


def cache_base() -> Path:
    if os.environ.get("TOKBENCH_EXT_DIR"):
        return Path(os.environ["TOKBENCH_EXT_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "tokbench" / "extensions"


def cache_key(spec: JitSpec) -> str:
    """16 hex digits of the environment (``sys.prefix``, Python/torch/CUDA versions), flags and sources."""
    import torch

    h = hashlib.sha256()
    for part in (sys.prefix, sys.version, torch.__version__, str(torch.version.cuda), *spec.flags):
        h.update(part.encode() + b"\0")
    for source in spec.sources:
        h.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def build_dir(spec: JitSpec) -> Path:
    return cache_base() / f"{spec.name}-{cache_key(spec)}"


def state(spec: JitSpec) -> tuple[str, str]:
    """``("built", folder)``, ``("failed", reason)`` or ``("not built", folder)``; never builds."""
    folder = build_dir(spec)
    if (folder / MARKER).is_file() and (folder / f"{spec.name}.so").is_file():
        return "built", str(folder)
    if (folder / FAILED).is_file():
        return "failed", (folder / FAILED).read_text(errors="replace").strip()
    return "not built", str(folder)


def import_library(spec: JitSpec, folder: Path) -> ModuleType:
    """Import ``<folder>/<name>.so`` as the module ``spec.name``."""
    import torch  # noqa: F401 -- the extension links against torch's libraries: load them first

    module_spec = importlib.util.spec_from_file_location(spec.name, folder / f"{spec.name}.so")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def _signals_stop_the_wait() -> Iterator[None]:
    """While waiting: SIGINT raises KeyboardInterrupt and SIGTERM exits (143), whatever handlers were set."""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be set from the main thread; the signals still reach it
        return

    def stop(signum, frame):
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        say("tokbench: stopped (SIGTERM) while waiting for the kernel build lock")
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise


def lock_timeout_s() -> float:
    raw = os.environ.get("TOKBENCH_EXT_LOCK_TIMEOUT", "")
    try:
        return float(raw) if raw else DEFAULT_LOCK_TIMEOUT_S
    except ValueError:
        raise ValueError(f"TOKBENCH_EXT_LOCK_TIMEOUT must be a number of seconds, got {raw!r}") from None


@contextmanager
def build_lock(folder: Path, label: str, timeout_s: float | None = None) -> Iterator[None]:
    """Hold ``folder/build.lock``; if another process holds it, say so and wait at most ``timeout_s``."""
    timeout_s = lock_timeout_s() if timeout_s is None else timeout_s
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            deadline = time.monotonic() + timeout_s
            with _signals_stop_the_wait():  # (before the message: a signal sent on reading it must stop us)
                say(f"tokbench: waiting for another process (pid {holder}) that is building {label} "
                    f"(at most {timeout_s:.0f} s; lock {path})…")
                while not _try_lock(fd):
                    if time.monotonic() >= deadline:
                        raise LockTimeout(f"another process (pid {holder}) has been building {label} for over "
                                          f"{timeout_s:.0f} s (lock {path}; TOKBENCH_EXT_LOCK_TIMEOUT sets the bound)")
                    time.sleep(POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def load(spec: JitSpec, build: Callable[[Path], ModuleType], force: bool = False) -> ModuleType:
    """The extension from this environment's cache, built into it first (under the lock) if needed.

    ``build(folder)`` compiles and imports the module with ``folder`` as its build directory.
    ``force``: build even if a build of these sources failed before, or if the built library no
    longer imports (``tokbench build-ext``).
    Raises `EarlierBuildFailed`, `LockTimeout`, or whatever the build raised.
    """
    folder = build_dir(spec)
    if (folder / MARKER).is_file():
        try:
            return import_library(spec, folder)
        except ImportError:  # a damaged library: `tokbench build-ext` (force) builds it again
            if not force:
                raise
            (folder / MARKER).unlink()
    if (folder / FAILED).is_file() and not force:
        reason = (folder / FAILED).read_text(errors="replace").strip()
        raise EarlierBuildFailed(f"{reason} (an earlier build; 'tokbench build-ext' retries)")
    with build_lock(folder, spec.label):
        if (folder / MARKER).is_file():  # built by the process we waited for
            return import_library(spec, folder)
        # torch's own lock file, left behind by a builder that was killed: we hold the real lock.
        (folder / "lock").unlink(missing_ok=True)
        (folder / FAILED).unlink(missing_ok=True)
        say(f"tokbench: building {spec.label} (once, {spec.duration})…")
        start = time.monotonic()
        try:
            module = build(folder)
        except Exception as err:
            atomic_write_bytes(folder / FAILED, f"{type(err).__name__}: {err}".splitlines()[0][:300].encode())
            raise
        seconds = time.monotonic() - start
        record = {"name": spec.name, "flags": list(spec.flags), "python_prefix": sys.prefix,
                  "build_seconds": round(seconds, 1), "built_unix": int(time.time())}
        atomic_write_bytes(folder / MARKER, json.dumps(record, indent=1).encode())
        say(f"tokbench: built {spec.label} in {seconds:.0f} s (cached in {folder})")
    return module
