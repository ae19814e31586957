"""``tokbench build-ext``: compile the CUDA extension ahead of time."""
from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from tokbench.cuda_ext import loader

    archs = [a.strip() for a in (args.arch or "").split(",") if a.strip()] or None
    if archs is None and not __import__("torch").cuda.is_available():
        raise RuntimeError("no CUDA device to build for: pass --arch, e.g. --arch 8.0,9.0")
    loader.build_extension(archs, verbose=args.verbose)
    print(f"built {loader.NAME} for {', '.join(archs) if archs else 'this GPU'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("build-ext", help="compile the fused nearest-codeword CUDA extension")
    p.add_argument("--arch", help="compute capabilities, e.g. 8.0,9.0 (default: the current GPU)")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=run)
