"""``tokbench build-ext``: compile the fused nearest-codeword kernels ahead of time."""
from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    import torch

    from tokbench.cuda_ext import cpu_loader, loader

    if not args.cuda_only:  # the CPU kernel needs only the system C++ compiler
        module = cpu_loader.build_extension(verbose=args.verbose, force=True)
        print(f"{cpu_loader.NAME} ready in {cpu_loader.jit.build_dir(cpu_loader.spec())} "
              f"(micro-kernels on this CPU: {', '.join(module.simd_levels())})")
    if args.cpu_only:
        return 0
    archs = [a.strip() for a in (args.arch or "").split(",") if a.strip()] or None
    if archs is None and not torch.cuda.is_available():
        if args.cuda_only:
            raise RuntimeError("no CUDA device to build for: pass --arch, e.g. --arch 8.0,9.0")
        print("CUDA extension skipped: no CUDA device (pass --arch, e.g. --arch 8.0,9.0, to build it anyway)")
        return 0
    loader.build_extension(archs, verbose=args.verbose, force=True)
    print(f"{loader.NAME} ready for {', '.join(loader.target_archs(archs))}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("build-ext", help="compile the fused nearest-codeword kernels (CPU, and CUDA where possible)")
    p.add_argument("--arch", help="CUDA compute capabilities, e.g. 8.0,9.0 (default: the current GPU)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--cpu-only", action="store_true", help="only the CPU kernel")
    which.add_argument("--cuda-only", action="store_true", help="only the CUDA extension")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=run)
