"""``tokbench info CKPT``: what a checkpoint is, and which code paths are active."""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch

import tokbench
from tokbench.ops import active_backend


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_sha256(path_or_name: str) -> str | None:
    """SHA-256 of a checkpoint's weights (None for a registered name with no file)."""
    path = Path(path_or_name)
    if path.is_dir():
        weights = path / "model.safetensors"
        return file_sha256(weights) if weights.is_file() else None
    return file_sha256(path) if path.is_file() else None


def cuda_ext_status() -> str:
    try:
        from tokbench.cuda_ext import loader
    except ImportError as err:
        return f"unavailable ({err})"
    return loader.extension_status()


def cpu_ext_status() -> str:
    try:
        from tokbench.cuda_ext import cpu_loader
    except ImportError as err:
        return f"unavailable ({err})"
    return cpu_loader.extension_status()


def layout_dim(tokenizer) -> int:
    """The codeword length of the tokenizer's first quantizer (8 when it has none)."""
    for module in tokenizer.modules():
        codebook = getattr(module, "codebook", None)
        if callable(codebook):
            return int(codebook().shape[1])
    return 8


def run(args: argparse.Namespace) -> int:
    tokenizer = tokbench.load(args.checkpoint)
    layout = tokenizer.layout_for(256, 256)
    info = {
        "source": args.checkpoint,
        "family": tokenizer.family,
        "kind": tokenizer.kind,
        "stride": tokenizer.stride,
        "parameters": tokenizer.num_parameters(),
        "layout@256": layout.describe(),
        "bits_per_image@256": layout.bits_per_image,
        "config": tokenizer.config,
        "checkpoint_sha256": checkpoint_sha256(args.checkpoint),
        "nearest_codeword": {
            "cpu": active_backend("cpu", d=layout_dim(tokenizer)),
            "cuda": active_backend("cuda") if torch.cuda.is_available() else "no CUDA device",
            "cpu_ext": cpu_ext_status(),
            "cuda_ext": cuda_ext_status(),
        },
    }
    print(json.dumps(info, indent=2, default=str))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="describe a checkpoint or registered tokenizer")
    p.add_argument("checkpoint", help="checkpoint directory, .ckpt, or registered name such as jpeg:q=50")
    p.set_defaults(func=run)
