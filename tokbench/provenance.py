"""Where a result came from: the code's git commit, the machine, the checkpoint's hash."""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path

import torch

from tokbench.registry import parse_spec

WEIGHTS_FILE = "model.safetensors"  # what a tokbench checkpoint directory's hash covers


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file (``sha256``, or ``md5`` where an upstream publishes that), read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file."""
    return file_digest(path, "sha256")


def checkpoint_sha256(path_or_name: str) -> str | None:
    """SHA-256 of a checkpoint's weights: a tokbench checkpoint directory's ``model.safetensors``,
    a weights file, or the ``weights=PATH`` of a public tokenizer's spec (for a released
    folder, its weights file); None for a registered name with no file."""
    path = Path(path_or_name)
    if not path.exists() and ":" in path_or_name:
        weights = parse_spec(path_or_name)[1].get("weights")
        if weights is None:
            return None
        path = Path(str(weights))
    if path.is_dir():
        found = [path / WEIGHTS_FILE] + sorted(path.glob("*.safetensors")) + sorted(path.glob("*.ckpt"))
        weights = next((p for p in found if p.is_file()), None)
        return file_sha256(weights) if weights is not None else None
    return file_sha256(path) if path.is_file() else None


def git_commit() -> str | None:
    """The commit of the tokbench source tree, when it runs from a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def hardware(device: str) -> dict:
    """The device a run used and the machine around it."""
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else None
    return {"device": device, "gpu": gpu, "cpu_count": os.cpu_count() or 1, "torch": torch.__version__,
            "platform": platform.platform()}
