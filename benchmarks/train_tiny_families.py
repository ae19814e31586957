"""Train each family's tiny config on CPU and report how far validation loss falls.

    python benchmarks/train_tiny_families.py [--steps 300] [--families vq,vae]

For each family: the validation L1 reconstruction loss (EMA weights) before training and
after ``--steps`` steps on random crops of the built-in photos, their ratio, the codebook
usage over the last 100 steps and the perplexity. The claim checked here (README,
"Training"): the loss at least halves and usage stays above 10% of the codebook.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from tokbench.training.cli import build_cli, shipped_config

USAGE_FLOOR = 0.10


def train_family(family: str, steps: int, root: Path) -> dict:
    argv = ["--config", str(shipped_config(f"{family}_tiny")), "--trainer.max_steps", str(steps),
            "--model.max_steps", str(steps), "--trainer.default_root_dir", str(root / family),
            "--trainer.logger.init_args.save_dir", str(root / family), "--trainer.enable_progress_bar", "false",
            "--trainer.val_check_interval", str(steps), "--model.log_images_every", "0"]
    cli = build_cli(argv)
    before = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)[0]["val/rec_loss"]
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    seconds = time.perf_counter() - start
    after = cli.trainer.callback_metrics["val/rec_loss"].item()
    metrics = pd.read_csv(next((root / family).rglob("metrics.csv")))
    row = {"family": family, "steps": steps, "val_l1_before": before, "val_l1_after": after,
           "ratio": after / before, "seconds": seconds}
    if "train/usage" in metrics:
        row["usage"] = metrics["train/usage"].dropna().iloc[-1]
        row["perplexity"] = metrics["train/perplexity"].dropna().iloc[-1]
    row["halved"] = after <= before / 2
    row["usage_ok"] = row.get("usage", 1.0) >= USAGE_FLOOR
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--families", default="vq,residual_scale,holistic_1d,vae")
    args = parser.parse_args()
    torch.set_float32_matmul_precision("high")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [train_family(f, args.steps, Path(tmp)) for f in args.families.split(",")]
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
