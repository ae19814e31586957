"""Training data: an image folder (or a built-in suite) with random-resized crops and flips."""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms import v2

from tokbench.imageio import (IMAGE_SUFFIXES, BadImageError, check_dimensions, read_image, resize_center_crop,
                              uint8_to_tensor)


def _clamp01(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0, 1)  # bicubic overshoots a little at edges


def scan_images(root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Readable images under ``root`` and the (file, reason) of those that are not."""
    good, bad = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            with Image.open(path) as img:
                check_dimensions(*img.size)  # the loader's pixel and aspect limits, from the header
                img.verify()  # header and structure, without decoding every pixel
            good.append(path)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            bad.append((str(path.relative_to(root)), f"{type(err).__name__}: {err}"))
    return good, bad


class StepIndexedSampler(DistributedSampler):
    """The training order as a function of the global step alone.

    Epoch ``e`` is a permutation seeded by ``(seed, e)``; global batch ``b`` of it is split
    into ``num_replicas`` contiguous chunks, rank ``r`` taking chunk ``r``. So N ranks with
    batch ``B`` see, step by step, exactly the images one process sees with batch ``N*B``;
    and a run resumed at any step (``step_fn()`` is read when an epoch's iteration starts)
    continues with the batches an uninterrupted run would have drawn. Items are
    ``(epoch, index)`` pairs so the dataset seeds each random crop from them.
    Subclassing `DistributedSampler` tells Lightning not to wrap it in its own.
    """

    def __init__(self, length: int, batch_size: int, num_replicas: int, rank: int, seed: int,
                 step_fn: Callable[[], int], items: str = "training images",
                 remedy: str = "raise data.repeats or lower data.batch_size") -> None:
        super().__init__(range(length), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.length, self.batch_size, self.step_fn = length, batch_size, step_fn
        self.global_batch = batch_size * num_replicas
        self.batches_per_epoch = length // self.global_batch
        if self.batches_per_epoch == 0:
            raise ValueError(f"data.batch_size: {batch_size} x {num_replicas} rank(s) is more than the "
                             f"{length} {items} ({remedy})")

    def __len__(self) -> int:
        return self.batches_per_epoch * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, first_batch = divmod(int(self.step_fn()), self.batches_per_epoch)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.length, generator=g).tolist()
        for b in range(first_batch, self.batches_per_epoch):
            start = b * self.global_batch + self.rank * self.batch_size
            for i in order[start:start + self.batch_size]:
                yield epoch, i


class ImageFiles(Dataset):
    """Images as float32 ``(3, H, W)`` in [0, 1] after ``transform``. A file that fails to
    decode later is counted and replaced by the next one, never fatal. Indexed by ``i`` or by
    ``(epoch, i)``; the latter seeds the random transform from ``(seed, epoch, i)``."""

    def __init__(self, sources: list, transform, seed: int = 0) -> None:
        self.sources, self.transform, self.seed = sources, transform, seed
        # Shared memory: loader workers are separate processes, and their counts must add up here.
        self._failures = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def failures(self) -> int:
        """Images that failed to decode while training (each replaced by the next readable one)."""
        return int(self._failures)

    def __len__(self) -> int:
        return len(self.sources)

    def _load(self, source) -> torch.Tensor:
        # The benchmark's loader: same decoding, skip rules and pixel limit as `tokbench eval`.
        return uint8_to_tensor(read_image(source) if isinstance(source, Path) else source)

    def __getitem__(self, key) -> torch.Tensor:
        epoch, index = key if isinstance(key, tuple) else (None, key)
        for offset in range(len(self.sources)):
            try:
                image = self._load(self.sources[(index + offset) % len(self.sources)])
                if epoch is None:
                    return self.transform(image)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed((self.seed * 1_000_003 + epoch) * 1_000_003 + index)
                    return self.transform(image)
            except (BadImageError, OSError) as err:
                self._failures += 1
                bad = self.sources[(index + offset) % len(self.sources)]
                warnings.warn(f"skipping unreadable image {bad}: {err}", stacklevel=2)
        raise RuntimeError("no readable image in the training data")


class ImageDataModule(L.LightningDataModule):
    def __init__(self, root: str = "builtin:photos", image_size: int = 64, batch_size: int = 8,
                 num_workers: int = 2, val_fraction: float = 0.1, val_images: int = 8,
                 min_scale: float = 0.3, repeats: int = 1, seed: int = 0) -> None:
        """``root``: an image folder, or ``builtin:photos`` (the benchmark's photo suite).
        ``repeats`` lists a small dataset several times per epoch (random crops differ)."""
        super().__init__()
        self.save_hyperparameters()
        self.skipped: list[tuple[str, str]] = []

    def _sources(self) -> list:
        root = self.hparams.root
        if root.startswith("builtin:"):
            from tokbench.tasks.suites import load_suite

            return [item.image for item in load_suite(root.split(":", 1)[1]).items]
        folder = Path(root)
        if not folder.is_dir():
            raise FileNotFoundError(f"data.root {folder}: no such folder")
        good, self.skipped = scan_images(folder)
        for name, reason in self.skipped:
            warnings.warn(f"skipping corrupt training image {name}: {reason}", stacklevel=2)
        if not good:
            raise ValueError(f"data.root {folder}: no readable images")
        return good

    def setup(self, stage: str | None = None) -> None:
        h = self.hparams
        sources = self._sources()
        n_val = min(h.val_images, max(1, int(len(sources) * h.val_fraction))) if len(sources) > 1 else 0
        order = torch.randperm(len(sources), generator=torch.Generator().manual_seed(h.seed)).tolist()
        val = [sources[i] for i in order[:n_val]] or [sources[0]]
        train = [sources[i] for i in order[n_val:]] or val
        # Bicubic with antialiasing: the resampling the benchmark evaluates with (tokbench.imageio.resize).
        bicubic = v2.InterpolationMode.BICUBIC
        train_tf = v2.Compose([v2.RandomResizedCrop(h.image_size, scale=(h.min_scale, 1.0), interpolation=bicubic,
                                                    antialias=True),
                               v2.RandomHorizontalFlip(), v2.Lambda(_clamp01)])
        # The evaluation's crop: the crop box first, so a wide strip is not resampled whole.
        val_tf = functools.partial(resize_center_crop, size=h.image_size)
        self.train_set = ImageFiles(train * h.repeats, train_tf, seed=h.seed)
        self.val_set = ImageFiles(val, val_tf)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped) + getattr(getattr(self, "train_set", None), "failures", 0)

    def train_dataloader(self) -> DataLoader:
        h = self.hparams
        trainer = self.trainer
        sampler = StepIndexedSampler(len(self.train_set), h.batch_size,
                                     num_replicas=trainer.world_size if trainer else 1,
                                     rank=trainer.global_rank if trainer else 0, seed=h.seed,
                                     step_fn=lambda: trainer.global_step if trainer else 0)
        # An explicit generator: the loader's worker seeds never draw from the global RNG.
        return DataLoader(self.train_set, batch_size=h.batch_size, drop_last=True, sampler=sampler,
                          generator=torch.Generator().manual_seed(h.seed),
                          num_workers=h.num_workers, persistent_workers=h.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size, num_workers=0)
