"""MaskGIT's VQGAN as bytedance/1d-tokenizer releases it (``maskgit-vqgan``) -> `MaskBitTokenizer`.

``maskgit-vqgan-imagenet-f16-256.bin`` (huggingface.co/fun-research/TiTok) is the tokenizer of RAR's
and 1d-tokenizer's MaskGIT generators and the proxy-code teacher of TiTok's two-stage training:
google-research/maskgit's JAX checkpoint converted to PyTorch with open-muse's
``scripts/convert_maskgit_vqgan.py`` and loaded by ``modeling/titok.py``'s ``PretrainedTokenizer``
(``modeling/modules/maskgit_vqgan.py``: ``Encoder``, ``Decoder``, ``VectorQuantizer``; a strict
``load_state_dict`` of a bare state dict).

It is the architecture of MaskBit's re-release ``maskgit-tokenizer`` (`maskbit`): the same
``hidden_channels=128, channel_mult=[1,1,2,2,4], num_res_blocks=2``, bias-free residual convs with
the shortcut on the block's output, 2x2 average pooling, the decoder's ``up.{i}`` numbered by
resolution level, 1,024 codes of dimension 256 compared in L2 -- 168 tensors, 54,515,587 elements in
both, counted with each upstream's classes. Only the names differ: 1d-tokenizer keeps a level's
residual blocks in ``block.{j}`` (MaskBit: ``res_blocks.{j}``) and lists the middle blocks directly
under ``mid`` (``encoder.mid.{j}``, MaskBit: ``encoder.mid.res_blocks.{j}``). Both are bare
``.bin`` state dicts. Whether the two files hold the same numbers is not checked (neither file is
here); both say they are MaskGIT's released weights.

Upstream feeds images in ``[0, 1]`` as they are and clamps reconstructions to ``[0, 1]``; ids are
the nearest code in L2 (``torch.addmm`` of the expanded distance).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tokbench.checkpoint import CheckpointError
from tokbench.tokenizers.public import maskbit
from tokbench.tokenizers.public.conv_keys import encoder_sizes
from tokbench.tokenizers.public.keymap import KeyMap, load_converted
from tokbench.tokenizers.public.maskbit_model import MaskBitTokenizer
from tokbench.tokenizers.public.release import (PICKLE_SUFFIXES, Release, file_index, options_read_off,
                                                public_factory, read_any, resolve_options, state_dict_of, the_one_file)

NAME = "maskgit-vqgan"
RELEASE_OPTIONS = maskbit.RELEASES["maskgit-tokenizer"]
EMBEDDING_KEY = maskbit.EMBEDDING_KEY
# 1d-tokenizer's own names: blocks under ``block`` (taming's word) and directly under ``mid``.
MARKERS = ("encoder.down.0.block.0.conv1.weight", "encoder.mid.0.conv1.weight", EMBEDDING_KEY)
MASKBIT_MARKER = "encoder.down.0.res_blocks.0.conv1.weight"  # the same model in MaskBit's names
PREPROCESSING = ("center-cropped as ADM does (halved with a box filter while the shorter side is at least "
                 "512, bicubic to 256, center crop; RAR's scripts/pretokenization.py), or resized (shorter "
                 "side, bicubic, antialiased) and center-cropped (1d-tokenizer's evaluation reader); inputs "
                 "in [0, 1] as they are; reconstructions clamped to [0, 1]")
RELEASE = Release(NAME, "maskbit", "maskgit-vqgan-imagenet-f16-256.bin (bare state dict)",
                  "huggingface.co/fun-research/TiTok; github.com/bytedance/1d-tokenizer (README_RAR.md, "
                  "README_TiTok.md)", PREPROCESSING)


def onedtok_name(maskbit_key: str) -> str:
    """1d-tokenizer's name of a tensor MaskBit's legacy (MaskGIT) model names ``maskbit_key``."""
    return maskbit_key.replace(".mid.res_blocks.", ".mid.").replace(".res_blocks.", ".block.")


def keymap_for(model: MaskBitTokenizer) -> KeyMap:
    """MaskBit's legacy-decoder map with every source renamed to 1d-tokenizer's names."""
    km = KeyMap()
    for entry in maskbit.keymap_for(model, legacy_decoder=True).entries:
        km.rename(entry.dst, onedtok_name(entry.srcs[0]), entry.combine)
    return km


def infer_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Sizes read off the tensors (KeyError if the file is not 1d-tokenizer's layout)."""
    return dict(encoder_sizes(state, block="block"), token_size=state["encoder.conv_out.weight"].shape[0],
                quantizer="vq", codebook_size=state[EMBEDDING_KEY].shape[0], downsample="avg_pool")


def build(release: Release, weights: Path | None, **overrides: Any) -> MaskBitTokenizer:
    if weights is None:
        return MaskBitTokenizer(**resolve_options(release.name, RELEASE_OPTIONS, {}, overrides))
    weights = the_one_file(weights, (".bin",), ".bin file (maskgit-vqgan-imagenet-f16-256.bin)")
    state = state_dict_of(read_any(weights), weights, ())
    source = f"{weights} (as {release.name})"
    if MASKBIT_MARKER in state:
        raise CheckpointError(f"{source}: this file has MaskBit's names (encoder.down.0.res_blocks.*), not "
                              "1d-tokenizer's: load it as maskgit-tokenizer")
    from_file = options_read_off(infer_config, state)
    model = MaskBitTokenizer(**resolve_options(release.name, RELEASE_OPTIONS, from_file, overrides,
                                               source=str(weights)))
    load_converted(model, keymap_for(model).apply(state, source), source, maskbit.OWN_BUFFERS)
    return model.eval()


def recognizes(path: Path) -> bool:
    """A bare state dict with 1d-tokenizer's names of MaskGIT's VQGAN (any codebook size: one name fits)."""
    if path.is_dir() or path.suffix not in PICKLE_SUFFIXES:
        return False
    index = file_index(path)
    return all(k in index for k in MARKERS)


build_maskgit_vqgan = public_factory(RELEASE, build, recognizes)
