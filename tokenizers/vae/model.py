"""Continuous KL-regularized autoencoder (SD / LDM style): diagonal Gaussian latents."""
from __future__ import annotations

import torch
from torch import nn

from tokbench.nn.conv import ConvDecoder, ConvEncoder, stride_of
from tokbench.nn.family import from_model_range, to_model_range
from tokbench.tokenizer import AutoencoderOutput, Tokenizer, validate_images
from tokbench.tokens import TokenLayout, Tokens


class DiagonalGaussian:
    """Posterior ``N(mean, exp(logvar))`` over latents ``(B, C, h, w)``."""

    def __init__(self, moments_B2Chw: torch.Tensor) -> None:
        self.mean, logvar = moments_B2Chw.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)  # the usual SD clamp: keeps exp() finite

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + torch.exp(0.5 * self.logvar) * noise

    def kl(self) -> torch.Tensor:
        """KL to N(0, I), summed over latent elements, per image ``(B,)``."""
        return 0.5 * (self.mean.square() + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


class VAETokenizer(Tokenizer):
    """Images -> ``(B, latent_channels, H/s, W/s)`` latents. ``encode`` returns the posterior
    mean; ``encode(images, sample=True)`` draws from the posterior instead."""

    family, kind = "vae", "continuous"

    def __init__(self, ch: int = 128, ch_mult: tuple[int, ...] = (1, 2, 4, 4), num_res_blocks: int = 2,
                 latent_channels: int = 4, kl_weight: float = 1e-6) -> None:
        super().__init__()
        ch_mult = tuple(ch_mult)
        self.config = dict(ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks,
                           latent_channels=latent_channels, kl_weight=kl_weight)
        self.stride, self.latent_channels, self.kl_weight = stride_of(ch_mult), latent_channels, kl_weight
        self.encoder = ConvEncoder(ch, ch_mult, num_res_blocks, 2 * latent_channels)
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)
        self.decoder = ConvDecoder(ch, ch_mult, num_res_blocks, latent_channels)

    def layout_for(self, height: int, width: int) -> TokenLayout:
        return TokenLayout("grid", (height // self.stride, width // self.stride), latent_channels=self.latent_channels)

    def posterior(self, x_B3HW: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(self.quant_conv(self.encoder(to_model_range(x_B3HW))))

    def decode_latents(self, z_BChw: torch.Tensor) -> torch.Tensor:
        return from_model_range(self.decoder(self.post_quant_conv(z_BChw)))

    @torch.no_grad()
    def encode(self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> Tokens:
        """Posterior mean by default; ``sample=True`` draws ``mean + std * noise``."""
        validate_images(images)
        self._sample, self._generator = sample, generator
        try:
            return super().encode(images)
        finally:
            self._sample, self._generator = False, None

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        post = self.posterior(x_B3HW)
        z = post.sample(getattr(self, "_generator", None)) if getattr(self, "_sample", False) else post.mean
        return Tokens(self.layout_for(*x_B3HW.shape[-2:]), x_B3HW.shape[-2:], latents=z)

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        return self.decode_latents(tokens.latents)

    def autoencode(self, x_B3HW: torch.Tensor) -> AutoencoderOutput:
        post = self.posterior(x_B3HW)
        z = post.sample() if self.training else post.mean
        kl_B = post.kl()
        return AutoencoderOutput(
            self.decode_latents(z),
            {"kl": self.kl_weight * kl_B.mean()},
            {"kl_per_image": kl_B.mean().detach(), "posterior_std": torch.exp(0.5 * post.logvar).mean().detach()},
        )

    def last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight
