"""MaskBit's released tokenizers (markweberdev/maskbit) -> `MaskBitTokenizer`.

* ``maskbit-{10,12,14,16,18}bit``: ``maskbit_tokenizer_{N}bit.bin`` (huggingface.co/markweber/
  maskbit_tokenizer_{N}bit), ``ConvVQModel`` at ``configs/tokenizer/maskbit_tokenizer_{N}bit.yaml``,
  LFQ with ``token_size = N`` bits;
* ``vqgan-plus-{10,12}bit``: VQGAN+, the same model with a codebook (``SimpleVectorizer``) of
  1,024 codes of dimension 256 (``vqgan_plus_10bit.yaml``, released as huggingface.co/markweber/
  vqgan_plus_paper) or 4,096 of dimension 64 (``vqgan_plus_12bit.yaml``, markweber/vqgan_plus_12bit).

All: ``hidden_channels=128, channel_mult=[1,1,2,2,4], num_res_blocks=2, sample_with_conv=True``,
16x16 tokens at 256 px, released as a bare state dict (``.bin``). The LFQ files also hold the
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
from tokbench.tokenizers.public.conv_keys import count_indexed
from tokbench.tokenizers.public.keymap import KeyMap, load_converted
from tokbench.tokenizers.public.maskbit_model import MaskBitTokenizer
from tokbench.tokenizers.public.release import (PICKLE_SUFFIXES, Release, file_index, public_factory, read_any,
                                                resolve_options, state_dict_of)

BITS = (10, 12, 14, 16, 18)
VQ_BITS = {10: 256, 12: 64}  # VQGAN+: bits (log2 of the codebook size) -> code dimension
_BASE = dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, downsample="conv")
RELEASES = {
    **{f"maskbit-{b}bit": dict(_BASE, token_size=b, quantizer="lfq", codebook_size=None) for b in BITS},
    **{f"vqgan-plus-{b}bit": dict(_BASE, token_size=d, quantizer="vq", codebook_size=2 ** b) for b, d in VQ_BITS.items()},
}
PREPROCESSING = ("resized (shorter side, bilinear) to 256 and center-cropped (torchvision); "
                 "inputs in [0, 1] as they are; reconstructions clamped to [0, 1]")
BITS_KEY, CODEBOOK_KEY = "quantize.bits_to_indices", "quantize.codebook"
EMBEDDING_KEY = "quantize.embedding.weight"  # VQGAN+'s codebook
OWN_BUFFERS = ("quantize.step", "quantize.last_hit_step", "quantize.hit_ema", "quantize.last_restart_step")
_MARKER = "encoder.down.0.res_blocks.0.conv1.weight"  # MaskBit's encoder (not taming's / LDM's naming)


def upstream_name(key: str) -> str:
    """MaskBit's name of a tokbench tensor: the resampling convs are one level flatter upstream."""
    return key.replace(".down_conv.conv.", ".down_conv.").replace(".upsample_conv.conv.", ".upsample_conv.")


def keymap_for(model: MaskBitTokenizer) -> KeyMap:
    """Every encoder/decoder tensor (and VQGAN+'s codebook) from its MaskBit name; LFQ's buffers
    are checked, not mapped."""
    km = KeyMap()
    for key in model.state_dict():
        if not key.startswith("quantize."):
            km.rename(key, upstream_name(key))
    if model.config["quantizer"] == "vq":
        km.rename("quantize.embedding", EMBEDDING_KEY)
    return km


def infer_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Sizes read off the tensors (KeyError if the file is not MaskBit's layout)."""
    ch = state["encoder.conv_in.weight"].shape[0]
    levels = count_indexed(state, "encoder.down.")
    if levels == 0:
        raise KeyError("encoder.down.0")
    ch_mult = tuple(state[f"encoder.down.{i}.res_blocks.0.conv1.weight"].shape[0] // ch for i in range(levels))
    vq = EMBEDDING_KEY in state
    return dict(ch=ch, ch_mult=ch_mult, num_res_blocks=count_indexed(state, "encoder.down.0.res_blocks."),
                token_size=state["encoder.conv_out.weight"].shape[0], quantizer="vq" if vq else "lfq",
                codebook_size=state[EMBEDDING_KEY].shape[0] if vq else None,
                downsample="conv" if levels == 1 or "encoder.down.0.down_conv.weight" in state else "avg_pool")


def without_lfq_buffers(state: dict[str, torch.Tensor], model: MaskBitTokenizer, source: str) -> dict[str, torch.Tensor]:
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


def _the_file(weights: Path) -> Path:
    if not weights.is_dir():
        return weights
    found = sorted(weights.glob("*.bin"))
    if len(found) != 1:
        raise CheckpointError(f"{weights}: expected one MaskBit .bin file in the folder, found "
                              f"{[p.name for p in found] or 'none'}")
    return found[0]


def build(release: Release, weights: Path | None, **overrides: Any) -> MaskBitTokenizer:
    base = RELEASES[release.name]
    if weights is None:
        return MaskBitTokenizer(**resolve_options(release.name, base, {}, overrides))
    weights = _the_file(weights)
    state = state_dict_of(read_any(weights), weights, ())
    try:
        from_file = infer_config(state)
    except (KeyError, IndexError):
        from_file = {}  # not MaskBit's layout: the key check below says what differs
    model = MaskBitTokenizer(**resolve_options(release.name, base, from_file, overrides, source=str(weights)))
    source = f"{weights} (as {release.name})"
    lfq = from_file and model.config["quantizer"] == "lfq"
    weights_only = without_lfq_buffers(state, model, source) if lfq else state
    load_converted(model, keymap_for(model).apply(weights_only, source), source, OWN_BUFFERS)
    return model.eval()


def _recognizes(bits: int, vq: bool):
    """A MaskBit file of this quantizer whose codebook has ``2**bits`` codes -- or a size no release
    of that quantizer has (then every such name fits, and the caller must choose)."""
    released = tuple(VQ_BITS) if vq else BITS

    def recognizes(path: Path) -> bool:
        if path.is_dir() or path.suffix not in PICKLE_SUFFIXES:
            return False
        index = file_index(path)
        if _MARKER not in index or (EMBEDDING_KEY if vq else BITS_KEY) not in index:
            return False
        size = index[EMBEDDING_KEY][0] if vq else 2 ** index[BITS_KEY][0]
        return size == 2 ** bits or size not in {2 ** b for b in released}
    return recognizes


def _factory(bits: int, vq: bool = False):
    name, stem = (f"vqgan-plus-{bits}bit", f"vqgan_plus_{bits}bit") if vq else (f"maskbit-{bits}bit",
                                                                              f"maskbit_tokenizer_{bits}bit")
    hf_repo = "vqgan_plus_paper" if name == "vqgan-plus-10bit" else stem  # the paper's VQGAN+
    return public_factory(
        Release(name, "maskbit", f"{stem}.bin (bare state dict)",
                f"huggingface.co/markweber/{hf_repo}; github.com/markweberdev/maskbit", PREPROCESSING),
        build, _recognizes(bits, vq))


build_10bit, build_12bit, build_14bit, build_16bit, build_18bit = (_factory(b) for b in BITS)
build_vqgan_plus_10bit, build_vqgan_plus_12bit = (_factory(b, vq=True) for b in VQ_BITS)


def build_maskbit_family(**options: Any) -> MaskBitTokenizer:
    """The ``maskbit`` family: rebuilds the architecture from a tokbench checkpoint's config."""
    return MaskBitTokenizer(**options)
