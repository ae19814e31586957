"""Train each family's tiny config on CPU and report how far validation loss falls.

    python benchmarks/train_tiny_families.py [--steps 300] [--families vq,vae] [--threads 1]

For each family: the validation L1 reconstruction loss of the EMA weights before training
and after ``--steps`` steps on random crops of the built-in photos (scikit-image and
scikit-learn samples; 20% held out for validation, center crops), their ratio, the codebook
usage (fraction of codes hit in the last 100 steps) and perplexity at the end. The claim
checked (README, "Training"): the loss at least halves and usage stays >= USAGE_FLOOR.
Exits non-zero when a family misses either.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from tokbench.training.cli import build_cli, shipped_config

USAGE_FLOOR = 0.25  # of the codebook, over the last 100 steps


def train_family(family: str, steps: int, root: Path, extra: list[str] = (), config: str | None = None) -> dict:
    """Train ``config`` (default ``<family>_tiny``) for ``steps`` steps; the first/last validation
    losses and codebook stats."""
    argv = ["--config", str(shipped_config(config or f"{family}_tiny")), "--trainer.max_steps", str(steps),
            "--model.max_steps", str(steps), "--trainer.default_root_dir", str(root / family),
            "--trainer.logger.init_args.save_dir", str(root / family), "--trainer.enable_progress_bar", "false",
            "--trainer.val_check_interval", str(steps), "--model.log_images_every", "0", *extra]
    cli = build_cli(argv)
    before = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)[0]["val/rec_loss"]
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    seconds = time.perf_counter() - start
    after = cli.trainer.callback_metrics["val/rec_loss"].item()
    metrics = pd.read_csv(next((root / family).rglob("metrics.csv")))
    row = {"family": family, "steps": steps, "val_l1_first": before, "val_l1_last": after,
           "ratio": after / before, "usage": float("nan"), "perplexity": float("nan"), "minutes": seconds / 60}
    if "train/usage" in metrics:
        row["usage"] = metrics["train/usage"].dropna().iloc[-1]
        row["perplexity"] = metrics["train/perplexity"].dropna().iloc[-1]
    row["halved"] = after <= before / 2
    row["usage_ok"] = not row["usage"] < USAGE_FLOOR  # NaN (continuous VAE): no codebook
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--families", default="vq,residual_scale,holistic_1d,vae")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args, extra = parser.parse_known_args()  # anything else goes to the training CLI, e.g. --model.lr 1e-3
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [train_family(f, args.steps, Path(tmp), extra) for f in args.families.split(",")]
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False, floatfmt=".4g"))
    return 0 if bool(table["halved"].all() and table["usage_ok"].all()) else 1


if __name__ == "__main__":
    sys.exit(main())
