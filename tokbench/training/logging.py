"""Training-time image logging: a grid of fixed validation images and their reconstructions."""
from __future__ import annotations

from pathlib import Path

import torch

from tokbench.imageio import save_png


def save_reconstruction_grid(trainer, x_B3HW: torch.Tensor, rec_B3HW: torch.Tensor, step: int, max_images: int = 8) -> Path:
    """Write originals (top row) over reconstructions (bottom row) to ``<log_dir>/images/step_XXXXXXX.png``;
    also sent to TensorBoard and W&B when those loggers are active."""
    n = min(max_images, x_B3HW.shape[0])
    top = torch.cat(list(x_B3HW[:n].detach().float().cpu()), dim=-1)
    bottom = torch.cat(list(rec_B3HW[:n].detach().float().clamp(0, 1).cpu()), dim=-1)
    grid = torch.cat([top, bottom], dim=-2)
    folder = Path(trainer.log_dir or trainer.default_root_dir) / "images"
    path = folder / f"step_{step:07d}.png"
    save_png(grid, path)
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):  # WandbLogger
            logger.log_image(key="val/reconstructions", images=[grid], step=step)
            continue
        experiment = getattr(logger, "experiment", None)
        if hasattr(experiment, "add_image"):  # TensorBoardLogger's SummaryWriter
            experiment.add_image("val/reconstructions", grid, step)
    return path
