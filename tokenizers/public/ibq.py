"""IBQ (TencentARC/SEED-Voken, ``imagenet256_{1024,8192,16384,262144}.ckpt`` and the text-to-image
pretrained ``IBQ_pretrain_{16384,262144}.ckpt``) -> ``vq``.

IBQ's tokenizer is taming's VQGAN (the LDM encoder/decoder with ``quant_conv`` /
``post_quant_conv``, attention at the 16 px level, ``num_res_blocks=4``, codes of dimension 256
compared as they are), so it loads into the ``vq`` family through taming's key map; its
evaluation data pipeline is taming's too (albumentations SmallestMaxSize + centre crop). What
differs is the index: IBQ's ``IndexPropagationQuantize`` takes the argmax of the inner products
``<z, e_n>``, not the nearest code in L2 (the two differ wherever code norms differ), so the
family's `VectorQuantizer` searches with ``search="inner_product"``.

The release is a Lightning ``.ckpt`` like Open-MAGVIT2's: ``state_dict`` holds the live weights,
``loss.*`` and an EMA shadow ``model_ema.<name with every dot removed>`` of every trainable
parameter. Upstream evaluates inside ``ema_scope()``, so each live tensor is replaced by its
shadow when the file has one (as ``LitEma.copy_to`` does). Sizes are read off the tensors.

The pretrained releases are the same ``IBQ`` class at the same sizes
(``configs/IBQ/gpu/pretrain_ibqgan_{16384,262144}.yaml``), trained on web images instead of
ImageNet: their files cannot be told from the ImageNet ones of the same codebook size, so they
must be named.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tokbench.tokenizers.public.open_magvit2 import EMA_PREFIX
from tokbench.tokenizers.public.release import (PICKLE_SUFFIXES, Release, file_index, public_factory, read_any,
                                                resolve_options, state_dict_of, options_read_off)
from tokbench.tokenizers.public.taming import PREPROCESSING, load_taming_layout, options_from_state
from tokbench.tokenizers.vq import VQTokenizer

EMA_SHADOW_OF_CODES = "state_dict/" + EMA_PREFIX + "quantizeembeddingweight"
_CONFIG = dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=4, z_channels=256, attn_levels=(4,), code_dim=256,
               l2_normalize=False, lowest_level_attn=False, quantizer_options={"search": "inner_product"})
RELEASES = {f"ibq-{n}": dict(_CONFIG, codebook_size=n) for n in (1024, 8192, 16384, 262144)}
RELEASES.update({f"ibq-pretrain-{n}": dict(_CONFIG, codebook_size=n) for n in (16384, 262144)})


def with_ema_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The live tensors (without ``loss.*`` and the shadows), each replaced by its EMA shadow if any."""
    shadows = {k[len(EMA_PREFIX):]: v for k, v in state.items() if k.startswith(EMA_PREFIX)}
    return {k: shadows.get(k.replace(".", ""), v) for k, v in state.items()
            if not k.startswith((EMA_PREFIX, "loss."))}


def build(release: Release, weights: Path | None, **overrides: Any) -> VQTokenizer:
    base = RELEASES[release.name]
    if weights is None:
        return VQTokenizer(**resolve_options(release.name, base, {}, overrides))
    state = with_ema_weights(state_dict_of(read_any(weights), weights, ("state_dict",)))
    from_file = options_read_off(options_from_state, state)
    return load_taming_layout(release, base, state, from_file, overrides, weights, weights)


def _recognizes(codebook_size: int):
    def recognizes(path: Path) -> bool:
        if path.is_dir() or path.suffix not in PICKLE_SUFFIXES:
            return False
        index = file_index(path)
        if EMA_SHADOW_OF_CODES not in index or "state_dict/quant_conv.weight" not in index:
            return False
        size = index[EMA_SHADOW_OF_CODES][0]
        # Another size than the releases': every IBQ name fits, and the caller must choose.
        return size == codebook_size or size not in {r["codebook_size"] for r in RELEASES.values()}
    return recognizes


def _factory(n: int):
    return public_factory(
        Release(f"ibq-{n}", "vq", f"imagenet256_{n}.ckpt (Lightning; EMA weights model_ema.*)",
                f"huggingface.co/TencentARC/IBQ-Tokenizer-{n}; github.com/TencentARC/SEED-Voken", PREPROCESSING),
        build, _recognizes(n))


def _pretrain_factory(n: int):
    return public_factory(
        Release(f"ibq-pretrain-{n}", "vq", f"IBQ_pretrain_{n}.ckpt (Lightning; EMA weights model_ema.*)",
                f"huggingface.co/TencentARC/IBQ-Tokenizer-{n}-Pretrain; github.com/TencentARC/SEED-Voken",
                PREPROCESSING),
        build, _recognizes(n))


build_1024, build_8192, build_16384, build_262144 = (_factory(n) for n in (1024, 8192, 16384, 262144))
build_pretrain_16384, build_pretrain_262144 = (_pretrain_factory(n) for n in (16384, 262144))
