"""Continuous KL-regularized autoencoder (SD / LDM style): diagonal Gaussian latents."""
from __future__ import annotations

import torch
from torch import nn

from tokbench.nn.conv import ConvDecoder, ConvEncoder, stride_of
from tokbench.nn.family import from_model_range, to_model_range
from tokbench.tokenizer import AutoencoderOutput, Tokenizer, pad_to_multiple, validate_images
from tokbench.tokens import TokenLayout, Tokens


class DiagonalGaussian:
    """Posterior ``N(mean, exp(logvar))`` over latents ``(B, C, h, w)``."""

    def __init__(self, moments_B2Chw: torch.Tensor) -> None:
        self.mean, logvar = moments_B2Chw.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)  # the usual SD clamp: keeps exp() finite

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """``mean + std * noise``; differentiable in mean and logvar (reparameterization)."""
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def kl(self) -> torch.Tensor:
        """KL to N(0, I), summed over latent elements, per image ``(B,)``."""
        return 0.5 * (self.mean.square() + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


class VAETokenizer(Tokenizer):
    """Images -> ``(B, latent_channels, H/s, W/s)`` latents.

    ``encode`` returns the posterior mean (deterministic); ``encode(images, sample=True)``
    draws from the posterior instead. In `autoencode` the ``kl`` loss is
    ``kl_weight * KL_sum / (3 H W)``: LDM adds ``kl_weight * KL_sum`` to a reconstruction
    loss *summed* over pixels, and tokbench's training losses are per-pixel *means*, so the
    KL is divided by the same pixel count to keep the published ratio (1e-6 for SD).

    Attention sits in the middle blocks; ``enc_attn_levels``/``dec_attn_levels`` add it
    after every ResNet block of those levels (0 = full resolution) on one side only, as
    MAR's KL-16 has it in its encoder's lowest level and not in its decoder.

    ``use_quant_conv=False`` drops the 1x1 convs around the bottleneck: the encoder emits the
    posterior moments and the decoder takes the latents directly (SD3's and FLUX.1's VAEs).
    """

    family, kind = "vae", "continuous"

    def __init__(self, ch: int = 128, ch_mult: tuple[int, ...] = (1, 2, 4, 4), num_res_blocks: int = 2,
                 latent_channels: int = 4, kl_weight: float = 1e-6, enc_attn_levels: list[int] | None = None,
                 dec_attn_levels: list[int] | None = None, use_quant_conv: bool = True) -> None:
        super().__init__()
        ch_mult = tuple(ch_mult)
        enc_attn_levels = None if enc_attn_levels is None else [int(a) for a in enc_attn_levels]
        dec_attn_levels = None if dec_attn_levels is None else [int(a) for a in dec_attn_levels]
        self.config = dict(ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks,
                           latent_channels=latent_channels, kl_weight=kl_weight, enc_attn_levels=enc_attn_levels,
                           dec_attn_levels=dec_attn_levels, use_quant_conv=bool(use_quant_conv))
        self.stride, self.latent_channels, self.kl_weight = stride_of(ch_mult), latent_channels, kl_weight
        self.encoder = ConvEncoder(ch, ch_mult, num_res_blocks, 2 * latent_channels, attn_levels=enc_attn_levels)
        self.quant_conv: nn.Module = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1) if use_quant_conv \
            else nn.Identity()
        self.post_quant_conv: nn.Module = nn.Conv2d(latent_channels, latent_channels, 1) if use_quant_conv \
            else nn.Identity()
        self.decoder = ConvDecoder(ch, ch_mult, num_res_blocks, latent_channels, attn_levels=dec_attn_levels)

    def layout_for(self, height: int, width: int) -> TokenLayout:
        return TokenLayout("grid", (height // self.stride, width // self.stride), latent_channels=self.latent_channels)

    def posterior(self, x_B3HW: torch.Tensor) -> DiagonalGaussian:
        """The diagonal Gaussian over latents of images whose sides are multiples of the stride."""
        return DiagonalGaussian(self.quant_conv(self.encoder(to_model_range(x_B3HW))))

    def decode_latents(self, z_BChw: torch.Tensor) -> torch.Tensor:
        return from_model_range(self.decoder(self.post_quant_conv(z_BChw)))

    @torch.no_grad()
    def encode(self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> Tokens:
        """Posterior mean by default; ``sample=True`` draws ``mean + std * noise`` (seeded by ``generator``)."""
        if not sample:
            return super().encode(images)
        validate_images(images)
        x_B3HW = pad_to_multiple(images, self.stride)
        z_BChw = self.posterior(x_B3HW).sample(generator)
        return Tokens(self.layout_for(*x_B3HW.shape[-2:]), images.shape[-2:], latents=z_BChw)

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        return Tokens(self.layout_for(*x_B3HW.shape[-2:]), latents=self.posterior(x_B3HW).mean)

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        return self.decode_latents(tokens.latents)

    def autoencode(self, x_B3HW: torch.Tensor) -> AutoencoderOutput:
        post = self.posterior(x_B3HW)
        z_BChw = post.sample() if self.training else post.mean
        kl_B = post.kl()
        pixels = x_B3HW[0].numel()  # 3 * H * W: puts the KL on the per-pixel scale of the losses
        return AutoencoderOutput(
            self.decode_latents(z_BChw),
            {"kl": self.kl_weight * kl_B.mean() / pixels},
            {"kl_per_image": kl_B.mean().detach(), "posterior_std": post.std.mean().detach()},
        )

    def last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight
