"""``tokbench gen encode``: a folder of images -> a token dataset (`tokbench.generation.token_data`)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def run_encode(args: argparse.Namespace) -> int:
    """Encode ``--data`` into ``--out`` (every rank under torchrun); print a summary on rank 0."""
    from tokbench.distributed import init_from_environment, rank_and_world
    from tokbench.generation.token_encoding import encode_dataset
    from tokbench.registry import with_weights

    device = init_from_environment(args.device)
    # The spec is recorded in the dataset for `gen fit`/`gen sample`: keep paths valid from any folder.
    weights = str(Path(args.weights).resolve()) if args.weights and Path(args.weights).exists() else args.weights
    summary = encode_dataset(with_weights(args.tokenizer, weights), args.data, args.out,
                             resolution=args.resolution, flip=args.flip, labels=args.labels,
                             batch_size=args.batch_size, device=device, workers=args.workers)
    if rank_and_world()[0] == 0:
        if summary.encoded_images == 0 and summary.already_done == summary.num_images:
            print(f"{summary.out}: already complete ({summary.num_images} images, {summary.num_items} rows); nothing to do")
        else:
            resumed = f", {summary.already_done} found done by an earlier run" if summary.already_done else ""
            print(f"wrote {summary.out}: {summary.num_items} rows from {summary.num_images} images{resumed}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``gen encode``."""
    p = subparsers.add_parser("encode", help="encode an image folder once into a memory-mapped token dataset",
                              description="Encode every image under --data (resized, center-cropped) with a "
                                          "tokenizer into --out: tokens.npy, labels.npy, meta.json. Rerunning "
                                          "resumes; under torchrun each rank encodes its share.")
    p.add_argument("--tokenizer", required=True, help="checkpoint directory, .ckpt, or registered name (vq:size=tiny)")
    p.add_argument("--weights", help="released weights of a public tokenizer named by --tokenizer")
    p.add_argument("--data", required=True, help="image folder: class subfolders (ImageFolder) or flat (unlabelled)")
    p.add_argument("--out", required=True, help="token dataset folder (new, or the same one to resume)")
    p.add_argument("--resolution", type=int, default=256, help="shorter side resized to N, then center crop NxN")
    p.add_argument("--flip", action="store_true", help="also encode each image's horizontal mirror (the next row)")
    p.add_argument("--labels", help="CSV with columns file,label (paths relative to --data) instead of subfolders")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: each rank its LOCAL_RANK's GPU)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="processes decoding and cropping images (default: min(4, CPUs))")
    p.set_defaults(func=run_encode)
