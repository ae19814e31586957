"""Fitting the AR prior with Lightning: `PriorModule` (the AR-modelling objective) and `fit_prior`."""
from __future__ import annotations

import logging
import math

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from tokbench.generation.prior import TokenPrior
from tokbench.training.lightning_warnings import silence_expected_lightning_warnings
from tokbench.training.schedule import warmup_cosine


class PriorModule(L.LightningModule):
    """Next-token cross-entropy on token sequences; AdamW with warm-up and cosine decay."""

    def __init__(self, vocab_size: int, seq_len: int, width: int = 256, depth: int = 4, heads: int = 4,
                 lr: float = 1e-3, weight_decay: float = 0.05, warmup_steps: int = 20, max_steps: int = 500,
                 min_lr_ratio: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.prior = TokenPrior(vocab_size, seq_len, width, depth, heads)

    def training_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> torch.Tensor:
        (seq_BL,) = batch
        loss = self.prior.loss(seq_BL)
        self.log("train/bits_per_token", loss.detach() / math.log(2), prog_bar=True, batch_size=seq_BL.shape[0])
        return loss

    def configure_optimizers(self):
        h = self.hparams
        opt = torch.optim.AdamW(self.prior.parameters(), lr=h.lr, betas=(0.9, 0.95), weight_decay=h.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: warmup_cosine(step, h.warmup_steps, h.max_steps, h.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def fit_prior(train_BL: torch.Tensor, vocab_size: int, *, steps: int = 500, batch_size: int = 32, seed: int = 0,
              accelerator: str = "cpu", **model_options) -> TokenPrior:
    """Train a `TokenPrior` on ``train_BL`` (int64 ids) for ``steps`` steps; returns it in eval mode."""
    if train_BL.dim() != 2 or train_BL.dtype != torch.long or train_BL.numel() == 0:
        raise ValueError(f"expected non-empty (N, L) int64 token sequences, got {tuple(train_BL.shape)} {train_BL.dtype}")
    if int(train_BL.max()) >= vocab_size or int(train_BL.min()) < 0:
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got [{int(train_BL.min())}, {int(train_BL.max())}]")
    L.seed_everything(seed, verbose=False)
    module = PriorModule(vocab_size, train_BL.shape[1], max_steps=steps, **model_options)
    loader = DataLoader(TensorDataset(train_BL.cpu()), batch_size=min(batch_size, len(train_BL)), shuffle=True,
                        drop_last=True, generator=torch.Generator().manual_seed(seed))
    # A step inside `tokbench eval`: keep Lightning's start-up banner out of the benchmark's output.
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)
    silence_expected_lightning_warnings()
    try:
        trainer = L.Trainer(max_steps=steps, accelerator=accelerator, devices=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0)
        trainer.fit(module, loader)
    finally:
        lightning_log.setLevel(level)
    return module.prior.eval()
