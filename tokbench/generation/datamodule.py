"""`TokenDataModule`: a token dataset (`tokbench gen encode`) as training and held-out batches.

Held-out images are every ``held_out_every``-th image (both flips of an image on the same
side). The training order is a function of the global step (`StepIndexedSampler`): a resumed
run continues with the batches an uninterrupted one would draw, and N ranks together see
what one process sees with N times the batch.
"""
from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from tokbench.generation.token_data import TokenDataset
from tokbench.training.data import StepIndexedSampler


class EpochIndexed(Dataset):
    """Takes the sampler's ``(epoch, index)`` items; the tokens need no per-epoch randomness."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item):
        return self.base[item[1] if isinstance(item, tuple) else item]


class TokenDataModule(L.LightningDataModule):
    def __init__(self, root: str = "", batch_size: int = 32, held_out_every: int = 20, num_workers: int = 2,
                 seed: int = 0) -> None:
        """``root``: the token dataset folder (``--tokens``)."""
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        h = self.hparams
        if not h.root:
            raise ValueError("no token dataset: give --tokens TOKDIR (written by `tokbench gen encode`)")
        dataset = TokenDataset(h.root)
        train, held_out = dataset.split(h.held_out_every)
        if not train:
            raise ValueError(f"{h.root}: no training items after holding out every {h.held_out_every}-th image")
        self.train_set, self.val_set = Subset(dataset, train), Subset(dataset, held_out)

    def train_dataloader(self) -> DataLoader:
        h, trainer = self.hparams, self.trainer
        sampler = StepIndexedSampler(len(self.train_set), h.batch_size,
                                     num_replicas=trainer.world_size if trainer else 1,
                                     rank=trainer.global_rank if trainer else 0, seed=h.seed,
                                     step_fn=lambda: trainer.global_step if trainer else 0,
                                     items=f"training rows of {h.root}",
                                     remedy="lower --data.batch_size, or encode more images")
        return DataLoader(EpochIndexed(self.train_set), batch_size=h.batch_size, drop_last=True, sampler=sampler,
                          generator=torch.Generator().manual_seed(h.seed), num_workers=h.num_workers,
                          persistent_workers=h.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size, num_workers=0)
