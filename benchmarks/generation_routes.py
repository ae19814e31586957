"""The discrete and continuous generation routes side by side on trained tiny tokenizers.

    python benchmarks/generation_routes.py [--families vq,residual_scale,holistic_1d,vae] [--steps 300]
           [--gen-steps 300] [--samples 8] [--threads 2]

Trains each family's tiny config for ``--steps`` steps on the built-in photos (as
``train_tiny_families.py``), then runs the `generation` measure (`tokbench.generation.evaluate`,
what ``tokbench eval --tasks generation`` runs) on the exported EMA weights at the config's
training resolution, with the same backbone (the tiny preset widened to 2 x 128) and the same
number of steps for every route: next-token GPT on the discrete families' ids, the GPT
backbone with MAR's diffusion head on the KL-VAE's latents (and, for the residual-scale
family, VAR's next-scale model too). Per row: reconstruction PSNR, the held-out loss (bits per
image for discrete tokens next to the unigram baseline; the diffusion loss for latents --
the two are not on one scale), generator parameters, training seconds and sampling
seconds per image.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

import tokbench
from tokbench.generation import evaluate as gen_eval
from tokbench.tasks.runner import EvalConfig, run_eval
from tokbench.tasks.suites import load_suite
from tokbench.training.cli import shipped_config

HERE = Path(__file__).resolve().parent


def _train_tiny():
    spec = importlib.util.spec_from_file_location("train_tiny_families", HERE / "train_tiny_families.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.train_family


def _mean(values: list[float]) -> str:
    return f"{np.mean(values):.4g} ± {1.96 * np.std(values, ddof=1) / np.sqrt(len(values)):.2g}" if len(values) > 1 \
        else f"{values[0]:.4g}"


def timed_routes(tokenizer, images, size: int, arch: str, steps: int, samples: int) -> dict:
    """Fit, score and sample one route; time the fit and the sampling separately."""
    timing = {}
    draw = gen_eval.draw_samples

    def timed_draw(*args, **kwargs):
        start = time.perf_counter()
        out = draw(*args, **kwargs)
        timing["sample_s"] = time.perf_counter() - start
        return out

    gen_eval.draw_samples = timed_draw
    try:
        start = time.perf_counter()
        result = gen_eval.evaluate_generation(tokenizer, images, gen_eval.GenerationSettings(
            image_size=size, steps=steps, arch=arch, num_samples=samples, diffusion_steps=100))
        total = time.perf_counter() - start
    finally:
        gen_eval.draw_samples = draw
    metrics, gen = result.metrics, result.extra["generator"]
    loss = ("diffusion loss", _mean(metrics["diffusion_loss"])) if "diffusion_loss" in metrics else \
        ("NLL bits/image", _mean(metrics["nll_bits_per_image"]))
    return {"route": gen["arch"], "held-out loss": f"{loss[0]}: {loss[1]}",
            "unigram bits/image": _mean(metrics["unigram_bits_per_image"]) if "unigram_bits_per_image" in metrics else "—",
            "generator params": gen["parameters"], "fit+score s": round(total - timing["sample_s"], 1),
            "s / sample": round(timing["sample_s"] / samples, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="vq,residual_scale,holistic_1d,vae")
    parser.add_argument("--steps", type=int, default=300, help="tokenizer training steps")
    parser.add_argument("--gen-steps", type=int, default=300, help="generator training steps (every route)")
    parser.add_argument("--samples", type=int, default=8, help="samples drawn per route (timed)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_family, rows = _train_tiny(), []
    images = [item.image for item in load_suite("photos").items]
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families.split(","):
            root = Path(tmp)
            train_family(family, args.steps, root)
            ckpt = next((root / family).rglob("last.ckpt"))
            size = yaml.safe_load(shipped_config(f"{family}_tiny").read_text())["data"]["image_size"]
            psnr = run_eval(EvalConfig(tokenizer=str(ckpt), tasks=["reconstruction"], resolution=str(size),
                                       skip_metrics=["lpips", "rfid"], out=root / f"eval_{family}"))
            psnr = psnr["tasks"]["reconstruction"]["metrics"]["psnr"]["mean"]
            tokenizer = tokbench.load(str(ckpt)).eval()
            layout = tokenizer.layout_for(size, size)
            archs = ["auto"] + (["next_scale"] if layout.arrangement == "scales" else [])
            for arch in archs:
                row = timed_routes(tokenizer, images, size, arch, args.gen_steps, args.samples)
                rows.append({"tokenizer": f"{family}_tiny ({args.steps} steps)", "px": size,
                             "tokens": layout.num_tokens, "PSNR": round(psnr, 2), **row})
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; every route: 2 x 128 backbone, "
          f"{args.gen_steps} steps, 64 crops per image, 11 photos fitted, 3 held out")
    print(pd.DataFrame(rows).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
