"""MAR's diffusion head: a small MLP that models one continuous token given the AR backbone's
output ``z`` at its position (Li et al., "Autoregressive Image Generation without Vector
Quantization").

The head predicts the noise added to a token (epsilon-prediction) from the noisy token, the
timestep and ``z``; residual blocks are modulated (AdaLN) by timestep + condition. Training:
the denoising loss at uniform random timesteps of a cosine schedule over 1,000 steps.
Sampling: ancestral DDPM on an evenly strided subset of the steps (default 100), the noise
scaled by a temperature, classifier-free guidance on the predicted noise.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TRAIN_STEPS = 1000


def cosine_alpha_bar(steps: int = TRAIN_STEPS, s: float = 0.008) -> torch.Tensor:
    """``(steps,)`` cumulative signal fractions of the cosine schedule (Nichol & Dhariwal), clipped as they do."""
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0)


def timestep_embedding(t_N: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of (float) timesteps."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t_N.device, dtype=torch.float32) / half)
    args = t_N.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x_NW: torch.Tensor, c_NW: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(c_NW).chunk(3, dim=-1)
        return x_NW + gate * self.mlp(self.norm(x_NW) * (1 + scale) + shift)


class DiffusionHead(nn.Module):
    """``eps(x_t, t, z)`` for tokens of ``channels`` dimensions; ``cond_width`` is the backbone's width."""

    def __init__(self, channels: int, cond_width: int, width: int = 256, depth: int = 3) -> None:
        super().__init__()
        self.channels, self.width = channels, width
        self.input_proj = nn.Linear(channels, width)
        self.time_embed = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.cond_embed = nn.Linear(cond_width, width)
        self.blocks = nn.ModuleList(ResBlock(width) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, channels)
        for block in self.blocks:  # blocks start as the identity (AdaLN-zero)
            nn.init.zeros_(block.modulation[-1].weight)
            nn.init.zeros_(block.modulation[-1].bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("alpha_bar", cosine_alpha_bar().float(), persistent=False)

    def forward(self, x_NC: torch.Tensor, t_N: torch.Tensor, z_NW: torch.Tensor) -> torch.Tensor:
        c_NW = self.time_embed(timestep_embedding(t_N, self.width)) + self.cond_embed(z_NW)
        h_NW = self.input_proj(x_NC)
        for block in self.blocks:
            h_NW = block(h_NW, c_NW)
        shift, scale = self.final_modulation(c_NW).chunk(2, dim=-1)
        return self.out(self.final_norm(h_NW) * (1 + scale) + shift)

    def loss(self, x0_NC: torch.Tensor, z_NW: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean squared error of the predicted noise (per token and channel) at random timesteps."""
        N = x0_NC.shape[0]
        device = x0_NC.device
        t_N = torch.randint(0, TRAIN_STEPS, (N,), device=device, generator=generator)
        noise_NC = torch.randn(x0_NC.shape, device=device, generator=generator, dtype=x0_NC.dtype)
        ab_N1 = self.alpha_bar[t_N][:, None]
        x_t = ab_N1.sqrt() * x0_NC + (1 - ab_N1).sqrt() * noise_NC
        return F.mse_loss(self(x_t, t_N, z_NW).float(), noise_NC.float())

    @torch.no_grad()
    def sample(self, z_NW: torch.Tensor, steps: int = 100, temperature: float = 1.0, cfg: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``(N, C)`` tokens. With ``cfg != 1`` the batch is ``[cond; uncond]`` (``2N`` rows of ``z``)
        and the result has the ``N`` conditional rows."""
        if not 1 <= steps <= TRAIN_STEPS:
            raise ValueError(f"diffusion steps must be in 1..{TRAIN_STEPS}, got {steps}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        guide = cfg != 1.0
        N = z_NW.shape[0] // 2 if guide else z_NW.shape[0]
        device = z_NW.device
        # Evenly strided from 0 (0, 10, ..., 990 for 100 steps, as guided-diffusion respaces): the
        # last training step, where the clipped cosine schedule leaves ~1e-8 of the signal, is not used.
        timesteps = (torch.arange(steps, device=device) * TRAIN_STEPS // steps).flip(0)
        x_NC = torch.randn((N, self.channels), device=device, generator=generator) * temperature
        for i, t in enumerate(timesteps):
            ab = self.alpha_bar[t]
            ab_prev = self.alpha_bar[timesteps[i + 1]] if i + 1 < steps else torch.ones((), device=device)
            x_in = torch.cat([x_NC, x_NC]) if guide else x_NC
            eps = self(x_in, t.expand(len(x_in)), z_NW)
            if guide:
                cond, uncond = eps.chunk(2)
                eps = uncond + cfg * (cond - uncond)
            # the DDPM posterior between two respaced steps, from the predicted noise (no division by
            # sqrt(alpha_bar) at the noisiest step, where it is ~0)
            beta = 1 - ab / ab_prev
            mean = (x_NC - beta / (1 - ab).sqrt() * eps) / (1 - beta).sqrt()
            if i + 1 == steps:
                return mean
            var = beta * (1 - ab_prev) / (1 - ab)
            noise = torch.randn(x_NC.shape, device=device, generator=generator)
            x_NC = mean + var.sqrt() * temperature * noise
        return x_NC
