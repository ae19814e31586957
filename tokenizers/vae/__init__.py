"""Continuous KL-VAE family (SD / LDM style)."""
from tokbench.nn.family import variant_factory
from tokbench.tokenizers.vae.model import VAETokenizer

VARIANTS = {
    # CPU, seconds: f4, 4 latent channels.
    "tiny": dict(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, latent_channels=4),
    # SD / LDM KL-f8: 4 latent channels, 32x32x4 at 256 px.
    "small": dict(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, latent_channels=4),
    # MAR's KL-16: f16 with 16 latent channels.
    "base": dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, latent_channels=16),
}

build = variant_factory(VAETokenizer, VARIANTS, "Build a KL-VAE: build(size='tiny'|'small'|'base', **overrides).")

__all__ = ["VAETokenizer", "build", "VARIANTS"]
