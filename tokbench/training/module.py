"""`AutoencoderModule`: one Lightning module trains every tokenizer family.

The tokenizer supplies its reconstruction and its own loss terms (`Tokenizer.autoencode`:
codebook/commitment, VAR's multi-scale term, KL); this module adds pixel (L1/L2),
perceptual (LPIPS) and adversarial (PatchGAN, hinge or non-saturating, taming's adaptive
weight, off before ``disc_start``) losses, keeps an EMA copy for validation and export,
and runs AdamW with linear warm-up and cosine decay. Two optimizers (tokenizer and
discriminator) mean manual optimization, so gradient clipping is applied here.
"""
from __future__ import annotations

import os
import time

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from tokbench import registry
from tokbench.training.ema import make_ema, update_ema
from tokbench.training.entropy import CodebookEntropy
from tokbench.training.losses import (PatchDiscriminator, Perceptual, adaptive_weight, discriminator_loss,
                                      generator_loss)
from tokbench.training.schedule import schedule_length, warmup_cosine
from tokbench.training.semantic import SemanticRegularizer


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; training stops and the last good checkpoint is kept."""


class AutoencoderModule(L.LightningModule):
    """Trains any `Tokenizer` with ``autoencode``; one training step = one batch = one
    ``global_step`` (also when the discriminator takes its own optimizer step)."""

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
        entropy_weight: float = 0.0,
        entropy_temperature: float = 0.01,
        semantic_teacher: str | None = None,
        semantic_weight: float = 0.0,
        semantic_random_teacher: bool = False,
        semantic_adaptive_weight: bool = True,
        learned_logvar: bool = False,
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
        max_steps: int | None = None,
        min_lr_ratio: float = 0.1,
        grad_clip: float = 1.0,
        ema_decay: float = 0.999,
        log_images_every: int = 0,
        compile: bool = False,
    ) -> None:
        """Every argument is a YAML key under ``model:`` (see the shipped configs).

        ``tokenizer``: a registry name with options (``"vq:size=tiny"``), ``tokenizer_options``
        overrides on top. Loss weights: ``l1_weight``/``l2_weight`` (pixels, [0, 1] range),
        ``perceptual_weight`` (LPIPS; AlexNet weights from the cache or ``weights_dir``),
        ``quantizer_weight`` (times the tokenizer's own terms: codebook, commitment, KL),
        ``entropy_weight`` (codebook entropy, MAGVIT-2 style), ``semantic_teacher`` with
        ``semantic_weight`` (alignment with a frozen DINOv2, ``"dinov2-vits14[:layer=L,resolution=R]"``:
        GigaTok's cosine loss on a decoder stage for discrete families, VA-VAE's VF loss on the
        latent for ``vae``, with its adaptive weight unless ``semantic_adaptive_weight`` is false;
        ``semantic_random_teacher`` for tests and speed runs), ``learned_logvar`` (SD/LDM:
        reconstruction / e^logvar + logvar with a learned scalar logvar), ``disc_weight``
        (PatchGAN from step ``disc_start``, ``disc_loss`` hinge or non_saturating, scaled by
        taming's adaptive weight unless ``adaptive_disc_weight`` is false). Optimizer: AdamW
        (``lr``, ``betas``, ``weight_decay``), ``warmup_steps`` linear then cosine to
        ``min_lr_ratio * lr`` at the end of the run (``trainer.max_steps``; ``max_steps``, if
        given, must equal it); ``grad_clip`` (global norm, 0 = off);
        ``ema_decay`` of the weights used for validation and export; a reconstruction grid
        every ``log_images_every`` steps; ``compile`` wraps ``autoencode`` in torch.compile.
        """
        super().__init__()
        if disc_loss not in ("hinge", "non_saturating"):
            raise ValueError(f"model.disc_loss must be 'hinge' or 'non_saturating', got {disc_loss!r}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.tokenizer = registry.create(tokenizer, **(tokenizer_options or {}))
        if not self.tokenizer.trainable:
            raise ValueError(f"model.tokenizer {tokenizer!r} ({type(self.tokenizer).__name__}) cannot be trained: it has "
                             "no differentiable autoencode() (codec baselines are fixed); pick a learned family "
                             "such as vq, residual_scale, holistic_1d or vae")
        self.ema_tokenizer = make_ema(self.tokenizer)
        # After the EMA copy: its hooks must stay on the trained tokenizer only.
        self.entropy = CodebookEntropy(self.tokenizer, entropy_temperature) if entropy_weight > 0 else None
        if (semantic_teacher is None) != (semantic_weight == 0):
            raise ValueError("model.semantic_teacher and model.semantic_weight go together: give a teacher "
                             f"(e.g. dinov2-vits14) and a weight > 0, got {semantic_teacher!r} and {semantic_weight}")
        self.semantic = (SemanticRegularizer(self.tokenizer, semantic_teacher, weights_dir, semantic_random_teacher)
                         if semantic_teacher else None)
        self.logvar = nn.Parameter(torch.zeros(())) if learned_logvar else None
        self.discriminator = PatchDiscriminator(disc_ndf, disc_layers) if disc_weight > 0 else None
        self.perceptual = (Perceptual(weights_dir, perceptual_random_backbone).requires_grad_(False)
                           if perceptual_weight > 0 else None)
        self.model_forward = torch.compile(self.tokenizer.autoencode) if compile else self.tokenizer.autoencode
        self._last_time: float | None = None
        self._fixed_images: torch.Tensor | None = None
        self._schedule_steps: int | None = None

    # -- optimizers ------------------------------------------------------------------
    def _schedule(self, step: int) -> float:
        h = self.hparams
        return warmup_cosine(step, h.warmup_steps, self._schedule_steps or h.max_steps or 1, h.min_lr_ratio)

    def configure_optimizers(self):
        h = self.hparams
        self._schedule_steps = schedule_length(h.max_steps, self.trainer.max_steps,
                                               self.trainer.estimated_stepping_batches if self.trainer.max_steps < 0
                                               else None)
        params = list(self.tokenizer.parameters()) + ([self.logvar] if self.logvar is not None else [])
        params += list(self.semantic.parameters()) if self.semantic is not None else []
        opt_g = torch.optim.AdamW(params, lr=h.lr, betas=tuple(h.betas), weight_decay=h.weight_decay)
        sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, self._schedule)
        if self.discriminator is None:
            return [opt_g], [sched_g]
        opt_d = torch.optim.AdamW(self.discriminator.parameters(), lr=h.disc_lr or h.lr, betas=tuple(h.betas),
                                  weight_decay=h.weight_decay)
        # Stepped only while the GAN is on, yet following the same curve over global steps.
        sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, lambda _: self._schedule(self.global_step))
        return [opt_g, opt_d], [sched_g, sched_d]

    # -- losses ------------------------------------------------------------------------
    def reconstruction_loss(self, rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Weighted pixel + perceptual loss; with a learned logvar, its Gaussian NLL form."""
        h = self.hparams
        loss = rec.new_zeros(())
        if h.l1_weight:
            loss = loss + h.l1_weight * F.l1_loss(rec, x)
        if h.l2_weight:
            loss = loss + h.l2_weight * F.mse_loss(rec, x)
        if self.perceptual is not None:
            loss = loss + h.perceptual_weight * self.perceptual(rec, x)
        if self.logvar is not None:
            loss = loss / torch.exp(self.logvar) + self.logvar
        return loss

    def _check_finite(self, name: str, value: torch.Tensor) -> None:
        if not torch.isfinite(value):
            raise NonFiniteLossError(
                f"{name} is {float(value.detach())} at step {self.global_step}: training stopped; "
                "the last good checkpoint is kept (lower the learning rate, or resume from it)")

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        h = self.hparams
        opts = self.optimizers()
        opt_g, opt_d = (opts[0], opts[1]) if isinstance(opts, list) else (opts, None)
        scheds = self.lr_schedulers()
        scheds = scheds if isinstance(scheds, list) else [scheds]
        x = batch
        gan_on = self.discriminator is not None and self.global_step >= h.disc_start

        # -- the tokenizer's step (the discriminator's weights are frozen meanwhile) --
        if opt_d is not None:
            self.toggle_optimizer(opt_g)
        out = self.model_forward(x)
        rec = out.reconstruction
        rec_loss = self.reconstruction_loss(rec, x)
        quant_loss = sum(out.losses.values(), rec.new_zeros(()))
        loss = rec_loss + h.quantizer_weight * quant_loss
        logs = {"train/rec_loss": rec_loss.detach(), "train/quant_loss": quant_loss.detach()}
        logs.update({f"train/{k}": v.detach() for k, v in out.losses.items()})
        if self.entropy is not None:
            ent = self.entropy.pop_loss()
            loss = loss + h.entropy_weight * ent
            logs["train/entropy_loss"] = ent.detach()
        if self.semantic is not None:
            sem = self.semantic.loss(x)
            weight = torch.tensor(1.0, device=x.device)
            if self.semantic.family == "vae" and h.semantic_adaptive_weight:
                weight = adaptive_weight(rec_loss, sem, self.tokenizer.encoder.conv_out.weight)  # VA-VAE: on the encoder
            loss = loss + h.semantic_weight * weight * sem
            logs.update({"train/semantic_loss": sem.detach(), "train/semantic_adaptive_weight": weight})
        if self.logvar is not None:
            logs["train/logvar"] = self.logvar.detach()
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
        if opt_d is not None:
            self.untoggle_optimizer(opt_g)

        # -- the discriminator's step --
        if gan_on:
            self.toggle_optimizer(opt_d)
            logits_real = self.discriminator(x.detach())
            logits_fake = self.discriminator(rec.detach())
            d_loss = discriminator_loss(logits_real, logits_fake, h.disc_loss)
            self._check_finite("the discriminator loss", d_loss)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            if h.grad_clip:
                self.clip_gradients(opt_d, gradient_clip_val=h.grad_clip, gradient_clip_algorithm="norm")
            # In manual optimization Lightning counts every optimizer.step() as a global step;
            # we count batches, so max_steps, disc_start and the schedules mean the same with
            # and without the GAN. (Lightning re-installs these hooks at every batch.)
            opt_d._on_before_step = opt_d._on_after_step = lambda: None
            opt_d.step()
            self.untoggle_optimizer(opt_d)
            scheds[1].step()
            logs.update({"train/d_loss": d_loss.detach(), "train/logits_real": logits_real.detach().mean(),
                         "train/logits_fake": logits_fake.detach().mean(),
                         "lr_disc": torch.tensor(scheds[1].get_last_lr()[0])})
        update_ema(self.ema_tokenizer, self.tokenizer, h.ema_decay)
        logs.update({f"train/{k}": v.detach().float() for k, v in out.stats.items() if v.dim() == 0})
        logs["train/loss"] = loss.detach()
        logs["lr"] = torch.tensor(scheds[0].get_last_lr()[0])
        now = time.perf_counter()
        if self._last_time is not None:
            logs["train/images_per_s"] = torch.tensor(x.shape[0] * self.trainer.world_size / (now - self._last_time))
        self._last_time = now
        self.log_dict(logs, prog_bar=False, on_step=True, on_epoch=False, batch_size=x.shape[0])
        self.log("loss", loss.detach(), prog_bar=True, on_step=True, batch_size=x.shape[0])

    def on_train_batch_end(self, outputs, batch: torch.Tensor, batch_idx: int) -> None:
        every = self.hparams.log_images_every
        if every and self.global_step % every == 0 and self.trainer.is_global_zero:
            self.log_reconstruction_grid()

    @torch.no_grad()
    def log_reconstruction_grid(self) -> None:
        """Originals over EMA reconstructions of the first validation images (the same ones every time)."""
        if self._fixed_images is None:
            loaders = self.trainer.val_dataloaders
            loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
            if loader is None:
                return
            self._fixed_images = next(iter(loader))[:8]
        from tokbench.training.logging import save_reconstruction_grid

        x = self._fixed_images.to(self.device)
        save_reconstruction_grid(self.trainer, x, self.ema_tokenizer.autoencode(x).reconstruction, self.global_step)

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        out = self.ema_tokenizer.autoencode(batch)
        rec_loss = F.l1_loss(out.reconstruction, batch)
        self.log("val/rec_loss", rec_loss, prog_bar=True, on_epoch=True, batch_size=batch.shape[0], sync_dist=True)
        self.log("val/mse", F.mse_loss(out.reconstruction.clamp(0, 1), batch), on_epoch=True,
                 batch_size=batch.shape[0], sync_dist=True)

    def on_train_batch_start(self, batch: torch.Tensor, batch_idx: int) -> None:
        # The randomness inside a step (dead-code restarts, posterior noise, token dropout)
        # is seeded from (run seed, step, rank): a resumed run draws what an uninterrupted
        # one draws, and rank 0 of N draws what a single process draws (Lightning re-seeds
        # DDP processes after the model is built, so the global RNG alone would differ).
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        torch.manual_seed(((seed * 1_000_003 + self.global_step) * 1_009 + self.global_rank) % 2**63)

    # -- checkpoints -------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # What `tokbench.load(run.ckpt)` needs to rebuild the tokenizer. Plain containers
        # only, so the file loads with torch.load(weights_only=True).
        checkpoint["tokbench"] = {"family": self.tokenizer.family, "config": self.tokenizer.config}
