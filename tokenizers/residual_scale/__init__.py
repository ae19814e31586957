"""Multi-scale residual family (VAR's VQVAE)."""
from tokbench.nn.family import variant_factory
from tokbench.tokenizers.residual_scale.model import ResidualScaleTokenizer

VARIANTS = {
    # CPU, seconds: stride 8, scales 1,2,4,8 (8x8 grid at 64 px), 256 codes.
    "tiny": dict(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, z_channels=16, codebook_size=256, code_dim=16,
                 scales=(1, 2, 4, 8)),
    # Not a published size: VAR's schedule and codebook on a 0.6x-wide conv net (ch 96), for
    # quicker 256 px experiments.
    "small": dict(ch=96, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=32, codebook_size=4096, code_dim=32,
                  scales=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16)),
    # VAR's vae_ch160v4096z32: f16, 4096 codes of dim 32, 10 scales = 680 tokens at 256 px.
    "base": dict(ch=160, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=32, codebook_size=4096, code_dim=32,
                 scales=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16)),
}

build = variant_factory(ResidualScaleTokenizer, VARIANTS,
                        "Build a VAR-style multi-scale residual tokenizer: build(size='tiny'|'small'|'base', **overrides).")

__all__ = ["ResidualScaleTokenizer", "build", "VARIANTS"]
