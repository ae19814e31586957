"""Checkpoints that are never half-written, kept in ``<run>/checkpoints``."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to ``<path>.tmp``, fsync, then rename: a crash leaves the previous file intact."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        # Our own checkpoints hold tensors and plain containers only: weights_only=True reads them.
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


class RunCheckpoint(ModelCheckpoint):
    """Every ``every_n_train_steps`` steps and at the end, ``last.ckpt`` in ``<default_root_dir>/checkpoints``."""

    def __init__(self, every_n_train_steps: int = 500, **kwargs) -> None:
        super().__init__(every_n_train_steps=every_n_train_steps, save_last=True, save_top_k=0, **kwargs)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = str(Path(trainer.default_root_dir) / "checkpoints")
        super().setup(trainer, pl_module, stage)

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        # Unless this very step was just saved (a batch-end checkpoint resumes most exactly),
        # write the final state. Every rank calls; rank 0 writes; a full, resumable checkpoint.
        if self._last_global_step_saved != trainer.global_step:
            trainer.save_checkpoint(Path(self.dirpath) / "last.ckpt", weights_only=False)
