"""`GeneratorModule`: training any generator (`TokenGPT`, `NextScaleGPT`) with Lightning.

Next-token (or next-scale) cross-entropy with labels dropped to "no class" with probability
``label_dropout`` (what classifier-free guidance samples against), AdamW with warm-up and a
cosine decay, an EMA copy of the weights (the weights that are exported and sampled from),
held-out negative log-likelihood logged as ``val/nll_bits_per_image``.

The module is built from a token dataset's ``info`` -- its layout, number of classes and
tokenizer -- so a checkpoint rebuilds without the data. A next-scale generator also needs the
tokenizer itself (its ``next_scale_inputs``): loaded from the info's spec, or handed over with
`attach_tokenizer`; it is not part of the generator's weights.
"""
from __future__ import annotations

import math
import os

import lightning as L
import torch

from tokbench.checkpoint import CheckpointError
from tokbench.generation.presets import build_generator
from tokbench.generation.token_data import TokenDataset
from tokbench.tokens import TokenLayout
from tokbench.training.ema import make_ema, update_ema
from tokbench.training.schedule import schedule_length, warmup_cosine


class GeneratorModule(L.LightningModule):
    def __init__(self, tokens: str | None = None, info: dict | None = None, arch: str = "gpt", preset: str = "tiny",
                 model_options: dict | None = None, label_dropout: float = 0.1, lr: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.95), weight_decay: float = 0.05, warmup_steps: int = 0,
                 max_steps: int | None = None, min_lr_ratio: float = 0.0, ema_decay: float = 0.999,
                 compile: bool = False) -> None:
        """``tokens``: a token dataset folder (`tokbench gen encode`), or ``info``: its
        ``{"layout", "num_classes", "tokenizer"}`` directly. ``compile``: train through
        `torch.compile` (`tokbench.generation.compile`; the EMA copy stays eager)."""
        super().__init__()
        if info is None:
            if not tokens:
                raise ValueError("GeneratorModule needs a token dataset (tokens=TOKDIR) or its info")
            info = dataset_info(TokenDataset(tokens))
        if not 0 <= label_dropout < 1:
            raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}")
        self.save_hyperparameters(ignore=["info"])
        self.hparams["info"] = info  # read from the data when not given: kept so a checkpoint rebuilds alone
        self.layout = TokenLayout.from_dict(info["layout"])
        self.num_classes = int(info.get("num_classes") or 0)
        self._tokenizer = None  # a plain attribute: not part of the generator's weights
        code_dim = None
        if arch == "next_scale":
            code_dim = info.get("code_dim") or self.attach_tokenizer(None).code_dim
        self.model = build_generator(arch, self.layout, self.num_classes, preset, code_dim=code_dim,
                                     **(model_options or {}))
        self.ema = make_ema(self.model)
        if compile:
            from tokbench.generation.compile import compile_training

            compile_training(self.model)

    def attach_tokenizer(self, tokenizer):
        """The tokenizer a next-scale generator reads its inputs from (loaded from the info's
        spec when ``None``). Returns it."""
        if tokenizer is None and self._tokenizer is None:
            import tokbench

            tokenizer = tokbench.load(self.hparams.info["tokenizer"]["spec"])
        if tokenizer is not None:
            self._tokenizer = tokenizer.eval().requires_grad_(False)
        return self._tokenizer

    def _inputs(self, ids_BL: torch.Tensor) -> torch.Tensor:
        tokenizer = self.attach_tokenizer(None)
        if tokenizer.device != ids_BL.device:
            tokenizer.to(ids_BL.device)
        return tokenizer.next_scale_inputs(ids_BL, self.layout)

    def _loss(self, model, tokens: torch.Tensor, labels_B: torch.Tensor) -> torch.Tensor:
        if self.hparams.arch == "next_scale":
            return model.loss(self._inputs(tokens.long()), tokens.long(), labels_B)
        if self.hparams.arch == "mar":
            return model.loss(tokens.float(), labels_B)
        return model.loss(tokens.long(), labels_B)

    @property
    def continuous(self) -> bool:
        return self.hparams.arch == "mar"

    @torch.no_grad()
    def held_out_loss(self, latents_BLC: torch.Tensor, labels_B: torch.Tensor | None = None,
                      seed: int = 0) -> torch.Tensor:
        """``(B,)`` the (EMA) continuous generator's denoising loss of each sequence, with noise and
        timesteps fixed by ``seed`` so that runs and checkpoints compare on the same draws."""
        g = torch.Generator(device=latents_BLC.device).manual_seed(seed)
        return torch.stack([self.ema.loss(x[None].float(), None if labels_B is None else labels_B[i:i + 1], g,
                                          with_bound=False)
                            for i, x in enumerate(latents_BLC)])

    @torch.no_grad()
    def set_latent_normalization(self, latents_NLC: torch.Tensor) -> None:
        """Measure the continuous generator's per-channel latent mean/std (and copy them to the EMA)."""
        self.model.set_normalization(latents_NLC.to(self.model.latent_mean.device))
        self.ema.set_normalization(latents_NLC.to(self.ema.latent_mean.device))
        self._normalized = True

    def on_fit_start(self) -> None:
        # A fresh continuous run measures its latent normalisation on (up to 4,096 of) its training
        # tokens; a resumed one has it in the checkpoint's buffers.
        if self.continuous and self.global_step == 0 and not getattr(self, "_normalized", False):
            train_set = self.trainer.datamodule.train_set
            rows = [train_set[i][0] for i in range(min(len(train_set), 4096))]
            self.set_latent_normalization(torch.stack(rows).float())

    def nll_bits(self, ids_BL: torch.Tensor, labels_B: torch.Tensor | None = None, ema: bool = True) -> torch.Tensor:
        """``(B,)`` bits of each sequence under the (EMA) generator."""
        model = self.ema if ema else self.model
        if self.hparams.arch == "next_scale":
            return model.nll_bits(self._inputs(ids_BL), ids_BL, labels_B)
        return model.nll_bits(ids_BL, labels_B)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # Label dropout is seeded from (run seed, step, rank): a resumed run draws what an
        # uninterrupted one draws (as the tokenizer training module does).
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        torch.manual_seed(((seed * 1_000_003 + self.global_step) * 1_009 + self.global_rank) % 2**63)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        ids_BL, labels_B = batch
        drop_B = torch.rand(labels_B.shape) < self.hparams.label_dropout
        labels_B = torch.where(drop_B.to(labels_B.device), torch.full_like(labels_B, -1), labels_B)
        loss = self._loss(self.model, ids_BL, labels_B)
        name, value = ("train/diffusion_loss", loss.detach()) if self.continuous else \
            ("train/bits_per_token", loss.detach() / math.log(2))
        self.log(name, value, prog_bar=True, batch_size=ids_BL.shape[0])
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # Here, not in on_train_batch_end: checkpoint callbacks run before that hook, and a
        # checkpoint must hold the EMA of the step it saves. The decay warms up (as usual) so
        # that a short run's EMA is not its initial weights.
        step = self.global_step
        update_ema(self.ema, self.model, min(self.hparams.ema_decay, (1 + step) / (10 + step)))

    def validation_step(self, batch, batch_idx: int) -> None:
        ids_BL, labels_B = batch
        if self.continuous:
            loss_B = self.held_out_loss(ids_BL, labels_B, seed=batch_idx)
            self.log("val/diffusion_loss", loss_B.mean(), prog_bar=True, on_epoch=True, batch_size=ids_BL.shape[0],
                     sync_dist=True)
            return
        bits_B = self.nll_bits(ids_BL.long(), labels_B)
        self.log("val/nll_bits_per_image", bits_B.mean(), prog_bar=True, on_epoch=True, batch_size=ids_BL.shape[0],
                 sync_dist=True)
        self.log("val/nll_bits_per_token", bits_B.mean() / ids_BL.shape[1], on_epoch=True,
                 batch_size=ids_BL.shape[0], sync_dist=True)

    def configure_optimizers(self):
        h = self.hparams
        total = schedule_length(h.max_steps, self.trainer.max_steps, self.trainer.estimated_stepping_batches)
        # No weight decay on norms, biases, embeddings and learned positions (nanoGPT's rule: only
        # matrices of linear layers decay; the diffusion head's time/condition embedding maps count
        # as embeddings by their names).
        decays = {n: p.dim() >= 2 and "embed" not in n and "positions" not in n for n, p in self.model.named_parameters()}
        decay = [p for n, p in self.model.named_parameters() if decays[n]]
        no_decay = [p for n, p in self.model.named_parameters() if not decays[n]]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": h.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=h.lr, betas=tuple(h.betas), fused=self.device.type == "cuda")
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine(step, h.warmup_steps, total, h.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuses a run saved with the former fixed-variance diffusion head (``C`` outputs): its
        optimizer state does not fit the learned-variance head, so it cannot be resumed."""
        out = checkpoint.get("state_dict", {}).get("model.head.out.weight")
        if self.continuous and out is not None and out.shape[0] == self.model.channels:
            raise CheckpointError(
                "this run was saved with tokbench's former MAR head (fixed variance, "
                f"{out.shape[0]} outputs); the head now learns its variance as MAR does "
                f"({2 * out.shape[0]} outputs), so the run cannot be resumed: start a new run (another "
                "--trainer.default_root_dir). Its exported generator/ still samples with `gen sample`.")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["tokbench_generator"] = {"arch": self.hparams.arch, "preset": self.hparams.preset,
                                            "config": self.model.config}


def dataset_info(dataset) -> dict:
    """What a generator needs to know of its token dataset (JSON-able)."""
    meta = dataset.meta
    return {"layout": meta["layout"], "num_classes": len(meta["classes"] or []),
            "tokenizer": meta["tokenizer"], "classes": meta["classes"], "resolution": meta["resolution"]}
