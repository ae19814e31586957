"""2D VQ family (VQGAN / LlamaGen)."""
from tokbench.nn.family import variant_factory
from tokbench.tokenizers.vq.model import VQTokenizer

VARIANTS = {
    # CPU, seconds: stride 8, 256 codes.
    "tiny": dict(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, z_channels=32, codebook_size=256, code_dim=8),
    # LlamaGen VQ-16: f16, 16384 l2-normalized codes of dim 8, ~72M parameters.
    "small": dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=256, codebook_size=16384, code_dim=8),
    # LlamaGen VQ-8: the same codes at f8 (32x32 tokens at 256 px).
    "base": dict(ch=128, ch_mult=(1, 2, 2, 4), num_res_blocks=2, z_channels=256, codebook_size=16384, code_dim=8),
}

build = variant_factory(VQTokenizer, VARIANTS, "Build a 2D VQ tokenizer: build(size='tiny'|'small'|'base', **overrides).")

__all__ = ["VQTokenizer", "build", "VARIANTS"]
