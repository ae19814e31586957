"""`ContinuousGPT`: AR generation of continuous tokens (KL-VAE latents), MAR-style.

The backbone is the discrete GPT's (`CausalBackbone`: class prefix with label dropout for CFG,
causal RoPE blocks, raster order over the latent grid); a linear map replaces the token
embedding, and the output at each position conditions a `DiffusionHead` that models the next
latent token. Training minimises the head's loss (MSE + variational bound; each token's loss
taken ``diffusion_batch_mul`` times with fresh noise, as MAR); sampling draws each token with
the head's reverse diffusion, the guidance scale ramped linearly over the tokens (MAR's
default) or constant. Latents are normalised per channel with the mean and std measured
on the training tokens and stored with the generator (buffers), so any VAE works without
hand-set scaling constants.
"""
from __future__ import annotations

import torch
from torch import nn

from tokbench.generation.blocks import init_weights
from tokbench.generation.diffusion_head import DiffusionHead, upgrade_fixed_variance_state
from tokbench.generation.gpt import CausalBackbone
from tokbench.generation.sampling import CFG_SCHEDULES, guidance_batch, in_interval, mar_cfg


class ContinuousGPT(CausalBackbone):
    arch = "mar"

    def __init__(self, channels: int, seq_len: int, num_classes: int = 0, width: int = 256, depth: int = 4,
                 heads: int = 4, grid: tuple[int, int] | None = None, rope_base: float = 10_000.0,
                 head_width: int = 256, head_depth: int = 3, diffusion_batch_mul: int = 4) -> None:
        super().__init__(seq_len, num_classes, width, depth, heads, grid, rope_base)
        self.channels, self.diffusion_batch_mul = channels, diffusion_batch_mul
        self.config = dict(channels=channels, seq_len=seq_len, num_classes=num_classes, width=width, depth=depth,
                           heads=heads, grid=list(grid) if grid else None, rope_base=rope_base, head_width=head_width,
                           head_depth=head_depth, diffusion_batch_mul=diffusion_batch_mul)
        self.input_proj = nn.Linear(channels, width)
        init_weights(self)
        self.head = DiffusionHead(channels, width, head_width, head_depth)  # its own (zero) initialisation
        # Latent normalisation, measured on the training tokens (`set_normalization`).
        self.register_buffer("latent_mean", torch.zeros(channels))
        self.register_buffer("latent_std", torch.ones(channels))

    def upgrade_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weights saved with the former fixed-variance head load as the learned-range head that
        samples exactly as they were trained (`upgrade_fixed_variance_state`)."""
        return upgrade_fixed_variance_state(state, "head.", self.channels)

    @torch.no_grad()
    def set_normalization(self, latents_NLC: torch.Tensor) -> None:
        """Per-channel mean and std of ``latents`` (float), used to normalise inputs and targets."""
        flat = latents_NLC.reshape(-1, self.channels).double()
        self.latent_mean.copy_(flat.mean(0).float())
        self.latent_std.copy_(flat.std(0).clamp_min(1e-6).float())

    def normalize(self, x_BLC: torch.Tensor) -> torch.Tensor:
        return (x_BLC - self.latent_mean) / self.latent_std

    def denormalize(self, x_BLC: torch.Tensor) -> torch.Tensor:
        return x_BLC * self.latent_std + self.latent_mean

    def conditions(self, latents_BLC: torch.Tensor, labels_B: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, W)``: at ``t`` the backbone's output that conditions token ``t`` (sees tokens ``< t``)."""
        B, L, _ = latents_BLC.shape
        if L > self.seq_len or latents_BLC.shape[-1] != self.channels:
            raise ValueError(f"expected (B, <= {self.seq_len}, {self.channels}) latents, got {tuple(latents_BLC.shape)}")
        x_BLC = self.input_proj(self.normalize(latents_BLC)[:, :-1])
        x_BLC = torch.cat([self.prefix(self.class_ids(labels_B, B, latents_BLC.device)), x_BLC], dim=1)
        return self.hidden(x_BLC, 0, None)

    def loss(self, latents_BLC: torch.Tensor, labels_B: torch.Tensor | None = None,
             generator: torch.Generator | None = None, with_bound: bool = True) -> torch.Tensor:
        """The diffusion head's loss: MAR's mean squared noise error per normalised channel plus the
        variational-bound term that trains the variance (``with_bound=False``: the squared error alone)."""
        z_NW = self.conditions(latents_BLC, labels_B).flatten(0, 1)
        x0_NC = self.normalize(latents_BLC).flatten(0, 1)
        k = self.diffusion_batch_mul
        return self.head.loss(x0_NC.repeat(k, 1), z_NW.repeat(k, 1), generator, with_bound)

    @torch.no_grad()
    def generate(self, labels_B: torch.Tensor | None = None, num: int | None = None, cfg: float = 1.0,
                 cfg_interval: tuple[float, float] = (0.0, 1.0), temperature: float = 1.0, diffusion_steps: int = 100,
                 generator: torch.Generator | None = None, use_cache: bool = True,
                 cfg_schedule: str = "linear") -> torch.Tensor:
        """``(B, seq_len, C)`` latents (denormalised), token by token; the guidance scale of each
        token follows ``cfg_schedule`` (`mar_cfg`) on the steps inside ``cfg_interval``."""
        if cfg < 1:
            raise ValueError(f"the guidance scale must be >= 1 (1 = no guidance), got {cfg}")
        if cfg_schedule not in CFG_SCHEDULES:
            raise ValueError(f"cfg_schedule must be one of {', '.join(CFG_SCHEDULES)}, got {cfg_schedule!r}")
        device = self.input_proj.weight.device
        B, classes_B, guide = guidance_batch(self, labels_B, num, cfg, device)
        tokens = []
        cache = self.new_cache(len(classes_B), device) if use_cache else None
        x_BLC = self.prefix(classes_B)
        for t in range(self.seq_len):
            if use_cache:
                z_BW = self.hidden(x_BLC, t, cache)[:, -1]
            else:
                so_far = torch.stack(tokens, dim=1) if tokens else None
                feed = self.prefix(classes_B) if so_far is None else torch.cat(
                    [self.prefix(classes_B), self.input_proj(so_far.repeat(2, 1, 1) if guide else so_far)], dim=1)
                z_BW = self.hidden(feed, 0, None)[:, -1]
            if guide and in_interval(t, self.seq_len, cfg_interval):
                x_BC = self.head.sample(z_BW, diffusion_steps, temperature, mar_cfg(cfg, t, self.seq_len, cfg_schedule),
                                        generator)  # [cond; uncond]
            else:
                x_BC = self.head.sample(z_BW[:B], diffusion_steps, temperature, 1.0, generator)
            tokens.append(x_BC)
            x_BLC = self.input_proj(x_BC.repeat(2, 1) if guide else x_BC)[:, None]
        return self.denormalize(torch.stack(tokens, dim=1))
