"""1D holistic family (TiTok / Hita): K tokens not tied to the pixel grid."""
from tokbench.nn.family import variant_factory
from tokbench.tokenizers.holistic_1d.model import Holistic1DTokenizer

VARIANTS = {
    # CPU, seconds: patch 8, 16 tokens, 256 codes.
    "tiny": dict(patch_size=8, width=64, depth=2, heads=4, num_tokens=16, codebook_size=256, code_dim=8, base_grid=8),
    # TiTok-S-128, TiTok-B-64, TiTok-L-32: 4096 l2-normalized codes of dim 12, patch 16.
    "small": dict(patch_size=16, width=512, depth=8, heads=8, num_tokens=128, codebook_size=4096, code_dim=12),
    "base": dict(patch_size=16, width=768, depth=12, heads=12, num_tokens=64, codebook_size=4096, code_dim=12),
    "large": dict(patch_size=16, width=1024, depth=24, heads=16, num_tokens=32, codebook_size=4096, code_dim=12),
}

build = variant_factory(Holistic1DTokenizer, VARIANTS,
                        "Build a TiTok-style 1D tokenizer: build(size='tiny'|'small'|'base'|'large', **overrides).")

__all__ = ["Holistic1DTokenizer", "build", "VARIANTS"]
