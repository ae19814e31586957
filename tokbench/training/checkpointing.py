"""Checkpoints that are never half-written, kept in ``<run>/checkpoints``, written often enough to resume."""
from __future__ import annotations

import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from tokbench.atomic import atomic_path

LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write through `tokbench.atomic.atomic_path` (temporary file, fsync, rename): a crash
    leaves the previous file intact."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with atomic_path(path, suffix=".ckpt.tmp") as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        # Our own checkpoints hold tensors and plain containers only: weights_only=True reads them,
        # and anything else (a planted pickle) is refused in one line naming the file.
        from tokbench.checkpoint import torch_load_safely

        # Read onto the CPU (as before); Lightning moves model and optimizer states to the device.
        return torch_load_safely(path)


class RunCheckpoint(ModelCheckpoint):
    """``last.ckpt`` in ``<default_root_dir>/checkpoints``: every ``every_n_train_steps`` steps,
    at least every ``every_seconds`` of training (default 10 minutes; ``None`` turns that off),
    and at the end.

    The time bound is what makes any run resumable: a run shorter than its step interval, or
    one killed between two step-based saves, loses at most ``every_seconds`` of work.
    """

    def __init__(self, every_n_train_steps: int = 500, every_seconds: float | None = 600.0, **kwargs) -> None:
        if every_seconds is not None and every_seconds < 0:
            raise ValueError(f"every_seconds must be >= 0 (or null to save by steps only), got {every_seconds}")
        super().__init__(every_n_train_steps=every_n_train_steps, save_last=True, save_top_k=0, **kwargs)
        self.every_seconds = every_seconds
        self._last_save_time: float | None = None
        self.clock = time.monotonic  # seconds; replaceable in tests

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = str(Path(trainer.default_root_dir) / "checkpoints")
        super().setup(trainer, pl_module, stage)

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._last_save_time = self.clock()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        now = self.clock()
        if self._last_global_step_saved == trainer.global_step:  # the step-based save just ran
            self._last_save_time = now
            return
        if self.every_seconds is None:
            return
        due = self._last_save_time is None or now - self._last_save_time >= self.every_seconds
        # Clocks differ between ranks; saving is collective, so rank 0 decides for all.
        if trainer.strategy.broadcast(due) and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_save_time = now

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        # Unless this very step was just saved (a batch-end checkpoint resumes most exactly),
        # write the final state. Every rank calls; rank 0 writes; a full, resumable checkpoint.
        if self._last_global_step_saved != trainer.global_step:
            trainer.save_checkpoint(Path(self.dirpath) / LAST, weights_only=False)


def resume_checkpoint(root_dir: str | Path) -> Path:
    """The run's ``<root_dir>/checkpoints/last.ckpt``; ``FileNotFoundError`` saying where it
    looked and why nothing is there."""
    folder = Path(root_dir).resolve() / "checkpoints"
    last = folder / LAST
    if last.is_file():
        return last
    where = f"--resume: no checkpoint at {last}"
    if not folder.is_dir():
        raise FileNotFoundError(f"{where}: the folder {folder} does not exist, so no run with "
                                f"trainer.default_root_dir={Path(root_dir).resolve()} has saved yet (a run saves every "
                                "every_n_train_steps steps and every every_seconds, 10 minutes by default; start it with "
                                "the same --config and --trainer.default_root_dir)")
    others = sorted(p.name for p in folder.iterdir())
    # an interrupted save leaves its temporary file (tokbench.atomic names it ".last.ckpt.<random>.ckpt.tmp")
    if any(name == LAST + ".tmp" or (name.startswith(f".{LAST}.") and name.endswith(".tmp")) for name in others):
        why = f"only {LAST}.tmp, a save that was interrupted before it completed"
    elif others:
        why = f"other files only ({', '.join(others[:5])}{', ...' if len(others) > 5 else ''})"
    else:
        why = "the folder is empty (the run stopped before its first save)"
    raise FileNotFoundError(f"{where}: {folder} holds {why}" if others else f"{where}: {why}")
