"""Fitting a generator on token sequences held in memory (the `generation` task's quick fit and
the tests); `tokbench gen fit` trains the same `GeneratorModule` from a token dataset on disk."""
from __future__ import annotations

import logging

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from tokbench.generation.module import GeneratorModule
from tokbench.tokens import TokenLayout
from tokbench.training.lightning_warnings import silence_expected_lightning_warnings


def check_ids(ids_NL: torch.Tensor, vocab_size: int) -> None:
    if ids_NL.dim() != 2 or ids_NL.dtype != torch.long or ids_NL.numel() == 0:
        raise ValueError(f"expected non-empty (N, L) int64 token sequences, got {tuple(ids_NL.shape)} {ids_NL.dtype}")
    if int(ids_NL.max()) >= vocab_size or int(ids_NL.min()) < 0:
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got [{int(ids_NL.min())}, {int(ids_NL.max())}]")


def lightning_device(device: str) -> dict:
    """Trainer arguments for one torch device: ``cuda:1`` trains on GPU 1, not on GPU 0."""
    d = torch.device(device)
    if d.type == "cuda":
        return {"accelerator": "gpu", "devices": [d.index if d.index is not None else torch.cuda.current_device()]}
    return {"accelerator": "cpu", "devices": 1}


def fit_in_memory(ids_NL: torch.Tensor, layout: TokenLayout, *, labels_N: torch.Tensor | None = None,
                  num_classes: int = 0, arch: str = "gpt", preset: str = "tiny", steps: int = 300,
                  batch_size: int = 32, lr: float = 3e-3, seed: int = 0, device: str = "cpu",
                  tokenizer=None, tokenizer_info: dict | None = None, **module_options) -> GeneratorModule:
    """Train a generator for ``steps`` steps on ``ids_NL`` (ids in generation order, or ``(N, L, C)``
    latents for ``arch="mar"``); returns the module in eval mode (its EMA copy is ``.ema``).
    ``tokenizer``: needed by ``next_scale``."""
    if layout.kind == "continuous":
        if ids_NL.dim() != 3 or not ids_NL.is_floating_point() or ids_NL.shape[-1] != layout.latent_channels:
            raise ValueError(f"expected (N, L, {layout.latent_channels}) float latents, got {tuple(ids_NL.shape)}")
    else:
        check_ids(ids_NL, layout.vocab_size)
    labels_N = torch.full((len(ids_NL),), -1, dtype=torch.long) if labels_N is None else labels_N.long()
    info = {"layout": layout.to_dict(), "num_classes": num_classes, "classes": None,
            "tokenizer": tokenizer_info or {"spec": None, "sha256": None}}
    L.seed_everything(seed, verbose=False)
    if arch == "next_scale":
        if tokenizer is None:
            raise ValueError("a next-scale generator needs the tokenizer (its next_scale_inputs)")
        info["code_dim"] = tokenizer.code_dim
    module = GeneratorModule(info=info, arch=arch, preset=preset, lr=lr, max_steps=steps, **module_options)
    if tokenizer is not None:
        module.attach_tokenizer(tokenizer)
    if arch == "mar":
        module.set_latent_normalization(ids_NL.float())
    loader = DataLoader(TensorDataset(ids_NL.cpu(), labels_N.cpu()), batch_size=min(batch_size, len(ids_NL)),
                        shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed))
    # A step inside `tokbench eval`: keep Lightning's start-up banner out of the benchmark's output.
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)
    silence_expected_lightning_warnings()
    try:
        trainer = L.Trainer(max_steps=steps, **lightning_device(device), logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0, limit_val_batches=0, gradient_clip_val=1.0)
        trainer.fit(module, loader)
    finally:
        lightning_log.setLevel(level)
    return module.eval()
