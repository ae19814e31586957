"""`AutoencoderModule`: one Lightning module trains every tokenizer family.

The tokenizer supplies its reconstruction and its own loss terms (`Tokenizer.autoencode`:
codebook/commitment, VAR's multi-scale term, KL); this module adds pixel (L1/L2),
perceptual (LPIPS) and adversarial (PatchGAN, hinge or non-saturating, taming's adaptive
weight, off before ``disc_start``) losses, keeps an EMA copy for validation and export,
and runs AdamW with linear warm-up and cosine decay. Two optimizers (tokenizer and
discriminator) mean manual optimization, so gradient clipping is applied here.
"""
from __future__ import annotations

import math
import random
import time

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from tokbench import registry
from tokbench.training.ema import make_ema, update_ema
from tokbench.training.losses import (PatchDiscriminator, Perceptual, adaptive_weight, discriminator_loss,
                                      generator_loss)


class NonFiniteLossError(RuntimeError):
    pass


class AutoencoderModule(L.LightningModule):
    def __init__(
        self,
        tokenizer: str = "vq:size=tiny",
        tokenizer_options: dict | None = None,
        l1_weight: float = 1.0,
        l2_weight: float = 0.0,
        perceptual_weight: float = 0.0,
        perceptual_random_backbone: bool = False,
        weights_dir: str | None = None,
        quantizer_weight: float = 1.0,
        disc_weight: float = 0.0,
        disc_start: int = 0,
        disc_loss: str = "hinge",
        disc_ndf: int = 64,
        disc_layers: int = 3,
        disc_lr: float | None = None,
        adaptive_disc_weight: bool = True,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 1e-4,
        warmup_steps: int = 0,
        max_steps: int = 1000,
        min_lr_ratio: float = 0.1,
        grad_clip: float = 1.0,
        ema_decay: float = 0.999,
        log_images_every: int = 0,
        compile: bool = False,
    ) -> None:
        """Every argument is a YAML key under ``model:`` (see the shipped configs)."""
        super().__init__()
        if disc_loss not in ("hinge", "non_saturating"):
            raise ValueError(f"model.disc_loss must be 'hinge' or 'non_saturating', got {disc_loss!r}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.tokenizer = registry.create(tokenizer, **(tokenizer_options or {}))
        if not hasattr(self.tokenizer, "autoencode"):
            raise ValueError(f"{tokenizer} cannot be trained")
        self.ema_tokenizer = make_ema(self.tokenizer)
        self.discriminator = PatchDiscriminator(disc_ndf, disc_layers) if disc_weight > 0 else None
        self.perceptual = (Perceptual(weights_dir, perceptual_random_backbone).requires_grad_(False)
                           if perceptual_weight > 0 else None)
        self.model_forward = torch.compile(self.tokenizer.autoencode) if compile else self.tokenizer.autoencode
        self._last_time: float | None = None

    # -- optimizers ------------------------------------------------------------------
    def _schedule(self, step: int) -> float:
        h = self.hparams
        if step < h.warmup_steps:
            return (step + 1) / h.warmup_steps
        progress = min(1.0, (step - h.warmup_steps) / max(1, h.max_steps - h.warmup_steps))
        return h.min_lr_ratio + (1 - h.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def configure_optimizers(self):
        h = self.hparams
        opt_g = torch.optim.AdamW(self.tokenizer.parameters(), lr=h.lr, betas=tuple(h.betas), weight_decay=h.weight_decay)
        sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, self._schedule)
        if self.discriminator is None:
            return [opt_g], [sched_g]
        opt_d = torch.optim.AdamW(self.discriminator.parameters(), lr=h.disc_lr or h.lr, betas=tuple(h.betas),
                                  weight_decay=h.weight_decay)
        return [opt_g, opt_d], [sched_g, torch.optim.lr_scheduler.LambdaLR(opt_d, self._schedule)]

    # -- losses ------------------------------------------------------------------------
    def reconstruction_loss(self, rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = self.hparams
        loss = rec.new_zeros(())
        if h.l1_weight:
            loss = loss + h.l1_weight * F.l1_loss(rec, x)
        if h.l2_weight:
            loss = loss + h.l2_weight * F.mse_loss(rec, x)
        if self.perceptual is not None:
            loss = loss + h.perceptual_weight * self.perceptual(rec, x)
        return loss

    def _check_finite(self, name: str, value: torch.Tensor) -> None:
        if not torch.isfinite(value):
            raise NonFiniteLossError(
                f"{name} is {float(value)} at step {self.global_step}: training stopped; "
                "the last good checkpoint is kept (lower the learning rate, or resume from it)")

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        h = self.hparams
        opts = self.optimizers()
        opt_g, opt_d = (opts[0], opts[1]) if isinstance(opts, list) else (opts, None)
        scheds = self.lr_schedulers()
        scheds = scheds if isinstance(scheds, list) else [scheds]
        x = batch
        out = self.model_forward(x)
        rec = out.reconstruction
        rec_loss = self.reconstruction_loss(rec, x)
        quant_loss = sum(out.losses.values(), rec.new_zeros(()))
        loss = rec_loss + h.quantizer_weight * quant_loss
        logs = {"train/rec_loss": rec_loss.detach(), "train/quant_loss": quant_loss.detach()}
        logs.update({f"train/{k}": v.detach() for k, v in out.losses.items()})
        gan_on = self.discriminator is not None and self.global_step >= h.disc_start
        if gan_on:
            logits_fake = self.discriminator(rec)
            g_loss = generator_loss(logits_fake, h.disc_loss)
            weight = (adaptive_weight(rec_loss, g_loss, self.tokenizer.last_layer()) if h.adaptive_disc_weight
                      else torch.tensor(1.0, device=x.device))
            loss = loss + h.disc_weight * weight * g_loss
            logs.update({"train/g_loss": g_loss.detach(), "train/disc_adaptive_weight": weight})
        self._check_finite("the tokenizer loss", loss)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if h.grad_clip:
            self.clip_gradients(opt_g, gradient_clip_val=h.grad_clip, gradient_clip_algorithm="norm")
        opt_g.step()
        scheds[0].step()
        if gan_on:
            logits_real = self.discriminator(x.detach())
            logits_fake = self.discriminator(rec.detach())
            d_loss = discriminator_loss(logits_real, logits_fake, h.disc_loss)
            self._check_finite("the discriminator loss", d_loss)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            if h.grad_clip:
                self.clip_gradients(opt_d, gradient_clip_val=h.grad_clip, gradient_clip_algorithm="norm")
            opt_d.step()
            logs.update({"train/d_loss": d_loss.detach(), "train/logits_real": logits_real.detach().mean(),
                         "train/logits_fake": logits_fake.detach().mean()})
        if len(scheds) > 1:
            scheds[1].step()  # the discriminator's schedule counts steps from the start too
        update_ema(self.ema_tokenizer, self.tokenizer, h.ema_decay)
        logs.update({f"train/{k}": v.detach() for k, v in out.stats.items() if v.dim() == 0})
        logs["train/loss"] = loss.detach()
        logs["lr"] = torch.tensor(scheds[0].get_last_lr()[0])
        now = time.perf_counter()
        if self._last_time is not None:
            logs["train/images_per_s"] = torch.tensor(x.shape[0] * self.trainer.world_size / (now - self._last_time))
        self._last_time = now
        self.log_dict(logs, prog_bar=False, on_step=True, on_epoch=False, batch_size=x.shape[0])
        self.log("loss", loss.detach(), prog_bar=True, on_step=True, batch_size=x.shape[0])

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        out = self.ema_tokenizer.autoencode(batch)
        rec_loss = F.l1_loss(out.reconstruction, batch)
        self.log("val/rec_loss", rec_loss, prog_bar=True, on_epoch=True, batch_size=batch.shape[0], sync_dist=True)
        self.log("val/mse", F.mse_loss(out.reconstruction.clamp(0, 1), batch), on_epoch=True,
                 batch_size=batch.shape[0], sync_dist=True)
        if batch_idx == 0 and self.hparams.log_images_every and self.trainer.is_global_zero:
            from tokbench.training.logging import save_reconstruction_grid

            save_reconstruction_grid(self.trainer, batch, out.reconstruction, self.global_step)

    # -- checkpoints -------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # What `tokbench.load(run.ckpt)` needs to rebuild the tokenizer, and the RNG states
        # that make a resumed run continue exactly as an uninterrupted one.
        checkpoint["tokbench"] = {"family": self.tokenizer.family, "config": self.tokenizer.config}
        checkpoint["rng_states"] = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
                                    "python": torch.tensor(random.getstate()[1], dtype=torch.int64)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        states = checkpoint.get("rng_states")
        if states:
            torch.set_rng_state(states["torch"])
            np.random.set_state(("MT19937", states["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))
            random.setstate((3, tuple(int(v) for v in states["python"].tolist()), None))
