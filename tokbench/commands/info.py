"""``tokbench info CKPT``: what a checkpoint is, and which code paths are active."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


# What `tokbench eval --resolution 256` does, beside an upstream's own evaluation preprocessing.
TOKBENCH_PREPROCESSING = ("shorter side resized to 256 (bicubic, antialias), center crop 256x256 (--resolution 256); "
                          "[0, 1] at the API, each adapter maps to its model's range")


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


def cuda_backend() -> str:
    """The CUDA search path, without building the extension."""
    try:
        from tokbench.cuda_ext import loader
    except ImportError:
        return "torch"
    return loader.planned_backend()


def cpu_backend(d: int) -> str:
    """The CPU search path for codewords of length ``d``, without building the kernel."""
    try:
        from tokbench.cuda_ext import cpu_loader
    except ImportError:
        return "torch_chunked"
    return cpu_loader.planned_backend(d)


def layout_dim(tokenizer) -> int:
    """The codeword length of the tokenizer's first quantizer (8 when it has none)."""
    for module in tokenizer.modules():
        codebook = getattr(module, "codebook", None)
        if callable(codebook):
            return int(codebook().shape[1])
    return 8


def run(args: argparse.Namespace) -> int:
    import torch  # here, not at module level: the CLI's start-up must not import torch

    import tokbench
    from tokbench.provenance import checkpoint_sha256
    from tokbench.registry import with_weights

    tokenizer = tokbench.load(with_weights(args.checkpoint, args.weights))
    layout = tokenizer.layout_for(256, 256)
    upstream = getattr(tokenizer, "upstream", None)
    info = {
        "source": args.checkpoint,
        **({"public_name": upstream["name"]} if upstream else {}),  # also what a release path was recognised as
        "family": tokenizer.family,
        "kind": tokenizer.kind,
        "stride": tokenizer.stride,
        "parameters": tokenizer.num_parameters(),
        "layout@256": layout.describe(),
        "bits_per_image@256": layout.bits_per_image,
        "config": tokenizer.config,
        **({"preprocessing": {"upstream": upstream["preprocessing"], "tokbench": TOKBENCH_PREPROCESSING}}
           if upstream else {}),
        "checkpoint_sha256": checkpoint_sha256(args.checkpoint),
        "nearest_codeword": {
            "cpu": cpu_backend(layout_dim(tokenizer)),
            "cuda": cuda_backend() if torch.cuda.is_available() else "no CUDA device",
            "cpu_ext": cpu_ext_status(),
            "cuda_ext": cuda_ext_status(),
        },
    }
    print(json.dumps(info, indent=2, default=str))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="describe a checkpoint or registered tokenizer")
    p.add_argument("checkpoint", help="checkpoint directory, .ckpt, or registered name such as jpeg:q=50")
    p.add_argument("--weights", help="released weights of a public tokenizer named as the checkpoint")
    p.set_defaults(func=run)
