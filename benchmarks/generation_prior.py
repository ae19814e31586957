"""The generation task on trained tokenizers: how much an AR prior must learn of their tokens.

    python benchmarks/generation_prior.py [--families vq,residual_scale,holistic_1d] [--steps 300]
           [--gen-steps 300]

Trains each family's tiny config for ``--steps`` steps on the built-in photos (as
``train_tiny_families.py``), then runs ``tokbench eval --tasks reconstruction,generation`` on
the exported EMA weights at the config's training resolution and prints, per tokenizer: the
tokens and raw bits per image, the reconstruction PSNR, and the prior's held-out NLL
(bits per image and as a fraction of the raw bits), with 95% intervals.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from tokbench.tasks.runner import EvalConfig, run_eval
from tokbench.training.cli import shipped_config

HERE = Path(__file__).resolve().parent


def _train_tiny():
    spec = importlib.util.spec_from_file_location("train_tiny_families", HERE / "train_tiny_families.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.train_family


def _fmt(metric: dict) -> str:
    lo, hi = metric["ci95"]
    return f"{metric['mean']:.4g} [{lo:.4g}, {hi:.4g}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="vq,residual_scale,holistic_1d")
    parser.add_argument("--steps", type=int, default=300, help="tokenizer training steps")
    parser.add_argument("--gen-steps", type=int, default=300, help="AR prior training steps")
    args = parser.parse_args()
    train_family, rows = _train_tiny(), []
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families.split(","):
            root = Path(tmp)
            train_family(family, args.steps, root)
            ckpt = next((root / family).rglob("last.ckpt"))
            size = yaml.safe_load(shipped_config(f"{family}_tiny").read_text())["data"]["image_size"]
            start = time.perf_counter()
            results = run_eval(EvalConfig(tokenizer=str(ckpt), tasks=["reconstruction", "generation"],
                                          resolution=str(size), skip_metrics=["lpips", "rfid"],
                                          gen_steps=args.gen_steps, out=root / f"eval_{family}"))
            gen = results["tasks"]["generation"]
            rows.append({"tokenizer": f"{family}_tiny ({args.steps} steps)", "px": size,
                         "tokens": gen["extra"]["tokens_per_image"], "raw bits": gen["extra"]["raw_bits_per_image"],
                         "PSNR": _fmt(results["tasks"]["reconstruction"]["metrics"]["psnr"]),
                         "NLL bits/image": _fmt(gen["metrics"]["nll_bits_per_image"]),
                         "NLL / raw": _fmt(gen["metrics"]["nll_fraction_of_raw"]),
                         "eval s": round(time.perf_counter() - start, 1)})
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; AR prior: {args.gen_steps} steps")
    print(pd.DataFrame(rows).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
