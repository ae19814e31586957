"""The same tiny tokenizer trained with and without semantic regularization, side by side.

    python benchmarks/semantic_regularization.py [--family vq] [--seeds 0,1,2] [--steps 200] \
        [--teacher dinov2-vits14:resolution=56] [--weights-dir DIR] [--gen-steps 150]

For each seed: ``<family>_tiny`` trained ``--steps`` steps on the built-in photos at 32 px,
once plain and once with ``--model.semantic_teacher`` (weight ``--weight``); then the EMA
tokenizer's PSNR on the built-in photos (centre crops at 32 px) and the held-out NLL of the
generation task's small AR model on its tokens (`tokbench.generation.evaluate`, bits per
image, and as a fraction of the raw bits). Prints mean and 95% interval over seeds per arm.

Without ``--weights-dir`` holding Meta's DINOv2 file the teacher is **random-init** (nothing
is downloaded): the run then measures what an alignment term with uninformative features
costs or gives at this scale, not GigaTok's or VA-VAE's effect. Report it as what it is.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

from tokbench.generation.evaluate import evaluate_generation
from tokbench.generation.settings import GenerationSettings
from tokbench.imageio import quantize_8bit
from tokbench.metrics.image import psnr_8bit
from tokbench.metrics.stats import mean_ci95
from tokbench.tasks.data import prepare
from tokbench.tasks.suites import load_suite
from tokbench.training.cli import build_cli, shipped_config

SIZE = 32


def train(family: str, steps: int, seed: int, root: Path, semantic: list[str]):
    argv = ["--config", str(shipped_config(f"{family}_tiny")), "--seed_everything", str(seed),
            "--data.root", "builtin:photos", "--data.image_size", str(SIZE), "--trainer.max_steps", str(steps),
            "--model.max_steps", str(steps), "--trainer.default_root_dir", str(root), "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.val_check_interval", str(steps),
            "--model.log_images_every", "0", *semantic]
    cli = build_cli(argv)
    cli.trainer.fit(cli.model, cli.datamodule)
    return cli.model.ema_tokenizer.eval()


def score(tokenizer, images, gen_steps: int, seed: int) -> dict:
    x = torch.stack([prepare(img, str(SIZE)).x_3HW for img in images])
    with torch.no_grad():
        rec = quantize_8bit(tokenizer.reconstruct(x))
    psnr = float(psnr_8bit(quantize_8bit(x), rec).mean())
    settings = GenerationSettings(image_size=SIZE, steps=gen_steps, crops_per_image=16, seed=seed)
    gen = evaluate_generation(tokenizer, images, settings, device="cpu")
    mean = lambda name: sum(gen.metrics[name]) / len(gen.metrics[name])  # noqa: E731
    return {"psnr": psnr, "nll_bits_per_image": mean("nll_bits_per_image"),
            "nll_fraction_of_raw": mean("nll_fraction_of_raw")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="vq")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--gen-steps", type=int, default=150)
    parser.add_argument("--teacher", default="dinov2-vits14:resolution=56")
    parser.add_argument("--weight", type=float, default=0.5)
    parser.add_argument("--weights-dir", help="folder with Meta's dinov2_*_pretrain.pth (else a random-init teacher)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = [item.pixels() for item in load_suite("photos").items]
    arms = {"plain": [], f"semantic ({'DINOv2' if args.weights_dir else 'random-init teacher'})":
            ["--model.semantic_teacher", args.teacher, "--model.semantic_weight", str(args.weight),
             *(["--model.weights_dir", args.weights_dir] if args.weights_dir else
               ["--model.semantic_random_teacher", "true"])]}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in map(int, args.seeds.split(",")):
            for arm, extra in arms.items():
                tokenizer = train(args.family, args.steps, seed, Path(tmp) / f"{arm[:4]}{seed}", extra)
                rows.append({"arm": arm, "seed": seed, **score(tokenizer, images, args.gen_steps, seed)})
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    summary = []
    for arm, group in table.groupby("arm", sort=False):
        line = {"arm": arm, "seeds": len(group)}
        for metric in ("psnr", "nll_bits_per_image", "nll_fraction_of_raw"):
            ci = mean_ci95(list(group[metric]))
            line[metric] = f"{ci['mean']:.4g} [{ci['ci95'][0]:.4g}, {ci['ci95'][1]:.4g}]"
        summary.append(line)
    print(f"\n{args.family}_tiny, {args.steps} steps at {SIZE} px, generator {args.gen_steps} steps; mean [95% CI] over seeds")
    print(pd.DataFrame(summary).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
