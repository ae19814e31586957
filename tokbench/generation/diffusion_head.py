"""MAR's diffusion head: a small MLP that models one continuous token given the AR backbone's
output ``z`` at its position (Li et al., "Autoregressive Image Generation without Vector
Quantization"), with the diffusion process MAR takes from guided-diffusion (Nichol & Dhariwal).

The head reads the noisy token, the timestep and ``z``; residual blocks are modulated (AdaLN)
by timestep + condition. It outputs ``2C`` channels: the predicted noise and, per channel, a
value ``v`` in about [-1, 1] that places the log-variance of each reverse step between the
posterior variance (``v = -1``) and the step's beta (``v = 1``): guided-diffusion's
``LEARNED_RANGE``, which MAR uses.

Training (MAR's loss): at uniform random timesteps of a cosine schedule over 1,000 steps, the
mean squared noise error plus the variational-bound term (the KL between the true posterior
and the model's reverse step, in bits per channel; the decoder NLL at ``t = 0``), the latter
through the variance only (the mean is taken from the noise prediction with its gradient
stopped).

Sampling: ancestral DDPM on guided-diffusion's respaced subset of the 1,000 steps (100 by
default: 0, 10, 20, ..., 50, 61, ..., 999), each step's noise scaled by a temperature (the
starting noise is not: MAR's rule), classifier-free guidance on the predicted noise while the
variance comes from the conditional row.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TRAIN_STEPS = 1000
LN2 = math.log(2.0)


def cosine_alpha_bar(steps: int = TRAIN_STEPS, s: float = 0.008) -> torch.Tensor:
    """``(steps,)`` cumulative signal fractions of the cosine schedule (Nichol & Dhariwal), clipped as they do."""
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0)


def space_timesteps(train_steps: int, steps: int) -> list[int]:
    """guided-diffusion's respacing of ``train_steps`` into ``steps`` kept timesteps (one
    section, as MAR's ``space_timesteps(1000, "100")``): start at 0 and add the fractional stride
    ``(train_steps - 1) / (steps - 1)``, rounding each accumulated position (Python's round)."""
    if not 1 <= steps <= train_steps:
        raise ValueError(f"diffusion steps must be in 1..{train_steps}, got {steps}")
    stride = (train_steps - 1) / (steps - 1) if steps > 1 else 1.0
    kept, position = [], 0.0
    for _ in range(steps):
        kept.append(round(position))
        position += stride
    return kept


def reverse_chain(alpha_bar_T: torch.Tensor, timesteps: list[int]) -> dict[str, torch.Tensor]:
    """The Gaussian reverse steps over the kept ``timesteps`` of a schedule (float64, one entry per
    kept step): each step's beta is ``1 - alpha_bar / alpha_bar of the previous kept step``.

    ``x_coef``, ``eps_coef``: the posterior mean from the predicted noise,
    ``x_coef * x_t - eps_coef * eps`` (guided-diffusion's mean through x0, rearranged);
    ``x0_coef``, ``xt_coef``: the true posterior mean ``x0_coef * x0 + xt_coef * x_t``;
    ``min_log``: the posterior log-variance (step 0's taken from step 1, as guided-diffusion
    clips it); ``max_log``: log beta."""
    ab = alpha_bar_T[timesteps].double()
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    beta = 1 - ab / ab_prev
    alpha = 1 - beta
    posterior_var = beta * (1 - ab_prev) / (1 - ab)
    min_log = torch.log(torch.cat([posterior_var[1:2], posterior_var[1:]])) if len(ab) > 1 else torch.log(beta)
    return {"ab": ab, "x_coef": 1 / alpha.sqrt(), "eps_coef": beta / (alpha.sqrt() * (1 - ab).sqrt()),
            "x0_coef": beta * ab_prev.sqrt() / (1 - ab), "xt_coef": (1 - ab_prev) * alpha.sqrt() / (1 - ab),
            "min_log": min_log, "max_log": torch.log(beta)}


def learned_range_log_variance(v: torch.Tensor, min_log: torch.Tensor, max_log: torch.Tensor) -> torch.Tensor:
    """``LEARNED_RANGE``: the model's ``v`` in [-1, 1] interpolates the log-variance between the
    posterior's (``v = -1``) and beta's (``v = 1``)."""
    frac = (v + 1) / 2
    return frac * max_log + (1 - frac) * min_log


def gaussian_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    # the tanh approximation of the standard normal CDF that guided-diffusion's bound uses
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Negative log-probability (nats) of ``x`` under a Gaussian discretised to bins of width 2/255
    (the outermost bins open above 0.999 and below -0.999): guided-diffusion's decoder term at
    ``t = 0``, which MAR keeps for latents."""
    inv_std = torch.exp(-log_scale)
    cdf_plus = _approx_normal_cdf(inv_std * (x - mean + 1 / 255))
    cdf_minus = _approx_normal_cdf(inv_std * (x - mean - 1 / 255))
    log_below = torch.log(cdf_plus.clamp(min=1e-12))
    log_above = torch.log((1 - cdf_minus).clamp(min=1e-12))
    log_bin = torch.log((cdf_plus - cdf_minus).clamp(min=1e-12))
    return -torch.where(x < -0.999, log_below, torch.where(x > 0.999, log_above, log_bin))


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


def upgrade_fixed_variance_state(state: dict[str, torch.Tensor], prefix: str, channels: int) -> dict[str, torch.Tensor]:
    """A state dict of the former head (``C`` outputs: the noise only, sampled with the fixed
    posterior variance) as one of this head: the variance outputs get zero weights and bias -1,
    i.e. ``v = -1`` everywhere, which is exactly the posterior variance it was trained for.
    States of this head pass through unchanged."""
    weight, bias = state.get(f"{prefix}out.weight"), state.get(f"{prefix}out.bias")
    if weight is None or weight.shape[0] != channels:
        return state
    state = dict(state)
    state[f"{prefix}out.weight"] = torch.cat([weight, torch.zeros_like(weight)])
    state[f"{prefix}out.bias"] = torch.cat([bias, torch.full_like(bias, -1.0)])
    return state


class DiffusionHead(nn.Module):
    """``(eps, v)(x_t, t, z)`` for tokens of ``channels`` dimensions; ``cond_width`` is the backbone's width."""

    def __init__(self, channels: int, cond_width: int, width: int = 256, depth: int = 3) -> None:
        super().__init__()
        self.channels, self.width = channels, width
        self.input_proj = nn.Linear(channels, width)
        self.time_embed = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.cond_embed = nn.Linear(cond_width, width)
        self.blocks = nn.ModuleList(ResBlock(width) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, 2 * channels)  # noise, then the variance's position in its range
        for block in self.blocks:  # blocks start as the identity (AdaLN-zero)
            nn.init.zeros_(block.modulation[-1].weight)
            nn.init.zeros_(block.modulation[-1].bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        alpha_bar = cosine_alpha_bar()
        self.register_buffer("alpha_bar", alpha_bar.float(), persistent=False)
        for name, value in reverse_chain(alpha_bar, list(range(TRAIN_STEPS))).items():
            if name != "ab":
                self.register_buffer(f"train_{name}", value.float(), persistent=False)
        self._chains: dict = {}  # (steps, device) -> the respaced sampling chain

    def forward(self, x_NC: torch.Tensor, t_N: torch.Tensor, z_NW: torch.Tensor) -> torch.Tensor:
        """``(N, 2C)``: the predicted noise and the variance values ``v``."""
        c_NW = self.time_embed(timestep_embedding(t_N, self.width)) + self.cond_embed(z_NW)
        h_NW = self.input_proj(x_NC)
        for block in self.blocks:
            h_NW = block(h_NW, c_NW)
        shift, scale = self.final_modulation(c_NW).chunk(2, dim=-1)
        return self.out(self.final_norm(h_NW) * (1 + scale) + shift)

    def loss_terms(self, x0_NC: torch.Tensor, z_NW: torch.Tensor, generator: torch.Generator | None = None,
                   t_N: torch.Tensor | None = None, noise_NC: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mse_N, vb_N)`` per row: the mean squared noise error and the variational-bound term
        (bits per channel), at ``t_N`` and ``noise_NC`` (drawn from ``generator`` when not given)."""
        N, device = x0_NC.shape[0], x0_NC.device
        if t_N is None:
            t_N = torch.randint(0, TRAIN_STEPS, (N,), device=device, generator=generator)
        if noise_NC is None:
            noise_NC = torch.randn(x0_NC.shape, device=device, generator=generator, dtype=x0_NC.dtype)
        x0_NC, noise_NC = x0_NC.float(), noise_NC.float()
        ab_N1 = self.alpha_bar[t_N][:, None]
        x_t = ab_N1.sqrt() * x0_NC + (1 - ab_N1).sqrt() * noise_NC
        eps_NC, v_NC = self(x_t, t_N, z_NW).float().chunk(2, dim=-1)
        mse_N = ((eps_NC - noise_NC) ** 2).mean(-1)

        def at(name: str) -> torch.Tensor:
            return getattr(self, f"train_{name}")[t_N][:, None]

        true_mean = at("x0_coef") * x0_NC + at("xt_coef") * x_t
        model_mean = at("x_coef") * x_t - at("eps_coef") * eps_NC.detach()  # the bound trains the variance only
        model_log = learned_range_log_variance(v_NC, at("min_log"), at("max_log"))
        kl_N = gaussian_kl(true_mean, at("min_log"), model_mean, model_log).mean(-1) / LN2
        decoder_N = discretized_gaussian_nll(x0_NC, model_mean, 0.5 * model_log).mean(-1) / LN2
        return mse_N, torch.where(t_N == 0, decoder_N, kl_N)

    def loss(self, x0_NC: torch.Tensor, z_NW: torch.Tensor, generator: torch.Generator | None = None,
             with_bound: bool = True) -> torch.Tensor:
        """MAR's training loss: mean over rows of MSE + the bound term (``with_bound=False``: the MSE alone)."""
        mse_N, vb_N = self.loss_terms(x0_NC, z_NW, generator)
        return (mse_N + vb_N).mean() if with_bound else mse_N.mean()

    @torch.no_grad()
    def sample(self, z_NW: torch.Tensor, steps: int = 100, temperature: float = 1.0, cfg: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``(N, C)`` tokens. With ``cfg != 1`` the batch is ``[cond; uncond]`` (``2N`` rows of ``z``)
        and the result has the ``N`` conditional rows."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        timesteps, chain = self.sampling_chain(steps, z_NW.device)
        guide = cfg != 1.0
        N = z_NW.shape[0] // 2 if guide else z_NW.shape[0]
        device = z_NW.device
        x_NC = torch.randn((N, self.channels), device=device, generator=generator)  # no temperature here (MAR)
        for k in reversed(range(steps)):
            x_in = torch.cat([x_NC, x_NC]) if guide else x_NC
            t_N = torch.full((len(x_in),), timesteps[k], device=device, dtype=torch.long)
            eps, v = self(x_in, t_N, z_NW).float().chunk(2, dim=-1)
            if guide:
                cond, uncond = eps.chunk(2)
                eps, v = uncond + cfg * (cond - uncond), v[:N]  # the variance of the conditional rows
            mean = chain["x_coef"][k] * x_NC - chain["eps_coef"][k] * eps
            if k > 0:  # the last step returns the mean (no noise at t = 0)
                log_var = learned_range_log_variance(v, chain["min_log"][k], chain["max_log"][k])
                noise = torch.randn(x_NC.shape, device=device, generator=generator)
                x_NC = mean + torch.exp(0.5 * log_var) * noise * temperature
        return mean

    def sampling_chain(self, steps: int, device: torch.device) -> tuple[list[int], dict[str, torch.Tensor]]:
        """The kept timesteps and their reverse steps (float32 on ``device``), computed once per setting."""
        key = (steps, str(device))
        if key not in self._chains:
            timesteps = space_timesteps(TRAIN_STEPS, steps)
            chain = reverse_chain(cosine_alpha_bar(), timesteps)
            self._chains[key] = timesteps, {k: v.to(device, torch.float32) for k, v in chain.items()}
        return self._chains[key]
