"""Training-time logging: the run's CSV logger, and a grid of fixed validation images and their reconstructions.

Everything a run writes goes under its ``trainer.default_root_dir`` (logs, image grids,
checkpoints), unless the user gives a logger its own ``save_dir``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from tokbench.imageio import save_png


class RunCSVLogger(CSVLogger):
    """Lightning's CSV logger whose ``save_dir`` defaults to the run's ``default_root_dir``.

    ``tokbench train`` fills in an unset ``save_dir`` from ``trainer.default_root_dir`` before
    the trainer is built (see :func:`tokbench.training.cli.logs_under_root_dir`); built
    directly in Python without one, it logs under the working directory, as Lightning does.
    """

    def __init__(self, save_dir: str | None = None, name: str | None = "logs", version: int | str | None = None,
                 prefix: str = "", flush_logs_every_n_steps: int = 100) -> None:
        super().__init__(save_dir if save_dir is not None else ".", name=name, version=version, prefix=prefix,
                         flush_logs_every_n_steps=flush_logs_every_n_steps)


def image_dir(trainer) -> Path:
    """Where a run's image grids go: the file logger's version folder (CSV, TensorBoard), else
    ``<default_root_dir>/images`` (W&B and others keep their own copy; their ``save_dir`` may be
    the working directory)."""
    if isinstance(trainer.logger, (CSVLogger, TensorBoardLogger)):
        return Path(trainer.logger.log_dir) / "images"
    return Path(trainer.default_root_dir) / "images"


def save_reconstruction_grid(trainer, x_B3HW: torch.Tensor, rec_B3HW: torch.Tensor, step: int, max_images: int = 8) -> Path:
    """Write originals (top row) over reconstructions (bottom row) to ``<image_dir>/step_XXXXXXX.png``
    (:func:`image_dir`); also sent to TensorBoard and W&B when those loggers are active."""
    n = min(max_images, x_B3HW.shape[0])
    top = torch.cat(list(x_B3HW[:n].detach().float().cpu()), dim=-1)
    bottom = torch.cat(list(rec_B3HW[:n].detach().float().clamp(0, 1).cpu()), dim=-1)
    grid = torch.cat([top, bottom], dim=-2)
    path = image_dir(trainer) / f"step_{step:07d}.png"
    save_png(grid, path)
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):  # WandbLogger
            logger.log_image(key="val/reconstructions", images=[grid], step=step)
            continue
        experiment = getattr(logger, "experiment", None)
        if hasattr(experiment, "add_image"):  # TensorBoardLogger's SummaryWriter
            experiment.add_image("val/reconstructions", grid, step)
    return path
