"""MaskBit's released tokenizers (markweberdev/maskbit) -> `MaskBitTokenizer`.

* ``maskbit-{10,12,14,16,18}bit``: ``maskbit_tokenizer_{N}bit.bin`` (huggingface.co/markweber/
  maskbit_tokenizer_{N}bit), ``ConvVQModel`` at ``configs/tokenizer/maskbit_tokenizer_{N}bit.yaml``,
  LFQ with ``token_size = N`` bits;
* ``vqgan-plus-{10,12}bit``: VQGAN+, the same model with a codebook (``SimpleVectorizer``) of
  1,024 codes of dimension 256 (``vqgan_plus_10bit.yaml``, released as huggingface.co/markweber/
  vqgan_plus_paper) or 4,096 of dimension 64 (``vqgan_plus_12bit.yaml``, markweber/vqgan_plus_12bit);
* ``maskgit-tokenizer``: MaskGIT's VQGAN as MaskBit re-released it (``configs/external/
  maskgit_tokenizer.yaml``, huggingface.co/markweber/maskgit_tokenizer): 1,024 codes of dimension
  256, 2x2 average pooling instead of strided convs (``sample_with_conv: False``), and the legacy
  decoder, which computes the same but numbers ``decoder.up.{i}`` by resolution level (0 = full
  resolution) where the current one numbers them in processing order.

All: ``hidden_channels=128, channel_mult=[1,1,2,2,4], num_res_blocks=2``, 16x16 tokens at 256 px,
released as a bare state dict (``.bin``). The LFQ files also hold the
quantizer's two buffers, ``quantize.bits_to_indices`` (``2**c``) and ``quantize.codebook`` (every
id's bits as +-1): they are checked to be the id layout tokbench's LFQ computes (channel 0 the
least significant bit) -- a file with another layout is refused, not silently decoded with the
wrong bits -- and are not loaded (tokbench's LFQ computes both). Sizes are read off the tensors.
Upstream evaluation feeds images in ``[0, 1]`` as they are and clamps reconstructions to ``[0, 1]``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tokbench.checkpoint import CheckpointError
from tokbench.tokenizers.public.conv_keys import encoder_sizes
from tokbench.tokenizers.public.keymap import KeyMap, load_converted
from tokbench.tokenizers.public.maskbit_model import MaskBitTokenizer
from tokbench.tokenizers.public.release import (PICKLE_SUFFIXES, Release, file_index, public_factory, read_any,
                                                resolve_options, state_dict_of, options_read_off, the_one_file)

BITS = (10, 12, 14, 16, 18)
VQ_BITS = {10: 256, 12: 64}  # VQGAN+: bits (log2 of the codebook size) -> code dimension
_BASE = dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, downsample="conv")
RELEASES = {
    **{f"maskbit-{b}bit": dict(_BASE, token_size=b, quantizer="lfq", codebook_size=None) for b in BITS},
    **{f"vqgan-plus-{b}bit": dict(_BASE, token_size=d, quantizer="vq", codebook_size=2 ** b)
       for b, d in VQ_BITS.items()},
    "maskgit-tokenizer": dict(_BASE, token_size=256, quantizer="vq", codebook_size=1024, downsample="avg_pool"),
}
PREPROCESSING = ("resized (shorter side, bilinear) to 256 and center-cropped (torchvision); "
                 "inputs in [0, 1] as they are; reconstructions clamped to [0, 1]")
BITS_KEY, CODEBOOK_KEY = "quantize.bits_to_indices", "quantize.codebook"
EMBEDDING_KEY = "quantize.embedding.weight"  # the codebook of VQGAN+ and MaskGIT's tokenizer
OWN_BUFFERS = ("quantize.step", "quantize.last_hit_step", "quantize.hit_ema", "quantize.last_restart_step")
_MARKER = "encoder.down.0.res_blocks.0.conv1.weight"  # MaskBit's encoder (not taming's / LDM's naming)


def upstream_name(key: str) -> str:
    """MaskBit's name of a tokbench tensor: the resampling convs are one level flatter upstream."""
    return key.replace(".down_conv.conv.", ".down_conv.").replace(".upsample_conv.conv.", ".upsample_conv.")


def legacy_decoder_name(key: str, levels: int) -> str:
    """The legacy decoder's name: ``decoder.up.{k}`` (processing order) is level ``levels - 1 - k``."""
    if not key.startswith("decoder.up."):
        return key
    k, rest = key[len("decoder.up."):].split(".", 1)
    return f"decoder.up.{levels - 1 - int(k)}.{rest}"


def keymap_for(model: MaskBitTokenizer, legacy_decoder: bool = False) -> KeyMap:
    """Every encoder/decoder tensor (and the VQ codebook) from its MaskBit name, the decoder's
    stages numbered by level with ``legacy_decoder``; LFQ's buffers are checked, not mapped."""
    levels = len(model.config["ch_mult"])
    km = KeyMap()
    for key in model.state_dict():
        if not key.startswith("quantize."):
            name = upstream_name(key)
            km.rename(key, legacy_decoder_name(name, levels) if legacy_decoder else name)
    if model.config["quantizer"] == "vq":
        km.rename("quantize.embedding", EMBEDDING_KEY)
    return km


def has_legacy_decoder(keys: Any, levels: int) -> bool:
    """Whether the decoder's stages are numbered by level: then the last one, not the first, upsamples."""
    return levels > 1 and f"decoder.up.{levels - 1}.upsample_conv.weight" in keys


def infer_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Sizes read off the tensors (KeyError if the file is not MaskBit's layout)."""
    sizes = encoder_sizes(state, block="res_blocks")
    vq = EMBEDDING_KEY in state
    return dict(sizes, token_size=state["encoder.conv_out.weight"].shape[0], quantizer="vq" if vq else "lfq",
                codebook_size=state[EMBEDDING_KEY].shape[0] if vq else None,
                downsample="conv" if len(sizes["ch_mult"]) == 1 or "encoder.down.0.down_conv.weight" in state else "avg_pool")


def without_lfq_buffers(state: dict[str, torch.Tensor], model: MaskBitTokenizer,
                        source: str) -> dict[str, torch.Tensor]:
    """The state without MaskBit's quantizer buffers, after checking they encode tokbench's id layout."""
    missing = [k for k in (BITS_KEY, CODEBOOK_KEY) if k not in state]
    if missing:
        raise CheckpointError(f"{source}: missing keys {missing} (MaskBit's LookupFreeQuantizer buffers)")
    q = model.quantize
    bits = torch.ones((), dtype=torch.long) << torch.arange(q.code_dim)
    codes = q.codes_from_ids(torch.arange(q.codebook_size))
    if not (torch.equal(state[BITS_KEY].long(), bits) and torch.equal(state[CODEBOOK_KEY].float(), codes)):
        raise CheckpointError(f"{source}: {BITS_KEY} / {CODEBOOK_KEY} are not an LFQ of {q.code_dim} bits with "
                              "id = sum_c [z_c > 0] * 2**c (channel 0 the least significant bit), the layout "
                              "MaskBit's code and tokbench compute")
    return {k: v for k, v in state.items() if k not in (BITS_KEY, CODEBOOK_KEY)}


def build(release: Release, weights: Path | None, **overrides: Any) -> MaskBitTokenizer:
    base = RELEASES[release.name]
    if weights is None:
        return MaskBitTokenizer(**resolve_options(release.name, base, {}, overrides))
    weights = the_one_file(weights, (".bin",), "MaskBit .bin file")
    state = state_dict_of(read_any(weights), weights, ())
    from_file = options_read_off(infer_config, state)
    model = MaskBitTokenizer(**resolve_options(release.name, base, from_file, overrides, source=str(weights)))
    source = f"{weights} (as {release.name})"
    lfq = from_file and model.config["quantizer"] == "lfq"
    weights_only = without_lfq_buffers(state, model, source) if lfq else state
    keymap = keymap_for(model, has_legacy_decoder(state, len(model.config["ch_mult"])))
    load_converted(model, keymap.apply(weights_only, source), source, OWN_BUFFERS)
    return model.eval()


def _codebook_size(options: dict[str, Any]) -> int:
    return options["codebook_size"] or 2 ** options["token_size"]


def _recognizes(name: str):
    """A MaskBit file of this release's quantizer and downsampling whose codebook has the release's
    size -- or a size no such release has (then every such name fits, and the caller must choose)."""
    own = RELEASES[name]
    kin = [r for r in RELEASES.values() if (r["quantizer"], r["downsample"]) == (own["quantizer"], own["downsample"])]

    def recognizes(path: Path) -> bool:
        if path.is_dir() or path.suffix not in PICKLE_SUFFIXES:
            return False
        index = file_index(path)
        quantizer = "vq" if EMBEDDING_KEY in index else "lfq" if BITS_KEY in index else None
        downsample = "conv" if "encoder.down.0.down_conv.weight" in index else "avg_pool"
        if _MARKER not in index or (quantizer, downsample) != (own["quantizer"], own["downsample"]):
            return False
        size = index[EMBEDDING_KEY][0] if quantizer == "vq" else 2 ** index[BITS_KEY][0]
        return size == _codebook_size(own) or size not in {_codebook_size(r) for r in kin}
    return recognizes


def _factory(name: str, file: str, hf_repo: str):
    return public_factory(
        Release(name, "maskbit", f"{file} (bare state dict)",
                f"huggingface.co/markweber/{hf_repo}; github.com/markweberdev/maskbit", PREPROCESSING),
        build, _recognizes(name))


build_10bit, build_12bit, build_14bit, build_16bit, build_18bit = (
    _factory(f"maskbit-{b}bit", f"maskbit_tokenizer_{b}bit.bin", f"maskbit_tokenizer_{b}bit") for b in BITS)
build_vqgan_plus_10bit = _factory("vqgan-plus-10bit", "vqgan_plus_10bit.bin", "vqgan_plus_paper")  # the paper's
build_vqgan_plus_12bit = _factory("vqgan-plus-12bit", "vqgan_plus_12bit.bin", "vqgan_plus_12bit")
build_maskgit_tokenizer = _factory("maskgit-tokenizer", "maskgit_tokenizer.bin", "maskgit_tokenizer")


def build_maskbit_family(**options: Any) -> MaskBitTokenizer:
    """The ``maskbit`` family: rebuilds the architecture from a tokbench checkpoint's config."""
    return MaskBitTokenizer(**options)
