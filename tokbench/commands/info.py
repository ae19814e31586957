"""``tokbench info CKPT``: what a checkpoint is, and which code paths are active."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import tokbench
from tokbench.ops import active_backend
from tokbench.provenance import checkpoint_sha256


def cuda_ext_status() -> str:
    try:
        from tokbench.cuda_ext import loader
    except ImportError as err:
        return f"unavailable ({err})"
    return loader.extension_status()


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
            "cpu": active_backend("cpu"),
            "cuda": active_backend("cuda") if torch.cuda.is_available() else "no CUDA device",
            "cuda_ext": cuda_ext_status(),
        },
    }
    print(json.dumps(info, indent=2, default=str))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="describe a checkpoint or registered tokenizer")
    p.add_argument("checkpoint", help="checkpoint directory, .ckpt, or registered name such as jpeg:q=50")
    p.set_defaults(func=run)
