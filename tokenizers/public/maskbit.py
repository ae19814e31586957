"""MaskBit tokenizers (markweberdev/maskbit, ``maskbit_tokenizer_{10,12,14,16,18}bit.bin``) -> `MaskBitTokenizer`.

The releases (huggingface.co/markweber/maskbit_tokenizer_{N}bit) are bare state dicts of
``ConvVQModel`` at ``configs/tokenizer/maskbit_tokenizer_{N}bit.yaml``: ``hidden_channels=128,
channel_mult=[1,1,2,2,4], num_res_blocks=2``, LFQ with ``token_size = N`` bits, 16x16 tokens at
256 px. Besides the weights they hold the quantizer's two buffers, ``quantize.bits_to_indices``
(``2**c``) and ``quantize.codebook`` (every id's bits as +-1): they are checked to be the id
layout tokbench's LFQ computes (channel 0 the least significant bit) -- a file with another
layout is refused, not silently decoded with the wrong bits -- and are not loaded (tokbench's
LFQ computes both). Sizes are read off the tensors. Upstream evaluation feeds images in
``[0, 1]`` as they are and clamps reconstructions to ``[0, 1]``.
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
RELEASES = {f"maskbit-{b}bit": dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, token_bits=b) for b in BITS}
PREPROCESSING = ("resized (shorter side, bilinear) to 256 and center-cropped (torchvision); "
                 "inputs in [0, 1] as they are; reconstructions clamped to [0, 1]")
BITS_KEY, CODEBOOK_KEY = "quantize.bits_to_indices", "quantize.codebook"
OWN_BUFFERS = ("quantize.step", "quantize.last_hit_step", "quantize.hit_ema")
_MARKER = "encoder.down.0.res_blocks.0.conv1.weight"  # MaskBit's encoder (not taming's / LDM's naming)


def upstream_name(key: str) -> str:
    """MaskBit's name of a tokbench tensor: the resampling convs are one level flatter upstream."""
    return key.replace(".down_conv.conv.", ".down_conv.").replace(".upsample_conv.conv.", ".upsample_conv.")


def keymap_for(model: MaskBitTokenizer) -> KeyMap:
    """Every encoder/decoder tensor from its MaskBit name (the quantizer's buffers are checked, not mapped)."""
    km = KeyMap()
    for key in model.state_dict():
        if not key.startswith("quantize."):
            km.rename(key, upstream_name(key))
    return km


def infer_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Sizes read off the tensors (KeyError if the file is not MaskBit's layout)."""
    ch = state["encoder.conv_in.weight"].shape[0]
    levels = count_indexed(state, "encoder.down.")
    if levels == 0:
        raise KeyError("encoder.down.0")
    ch_mult = tuple(state[f"encoder.down.{i}.res_blocks.0.conv1.weight"].shape[0] // ch for i in range(levels))
    return dict(ch=ch, ch_mult=ch_mult, num_res_blocks=count_indexed(state, "encoder.down.0.res_blocks."),
                token_bits=state["encoder.conv_out.weight"].shape[0])


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
    weights_only = without_lfq_buffers(state, model, source) if from_file else state
    load_converted(model, keymap_for(model).apply(weights_only, source), source, OWN_BUFFERS)
    return model.eval()


def _recognizes(bits: int):
    def recognizes(path: Path) -> bool:
        if path.is_dir() or path.suffix not in PICKLE_SUFFIXES:
            return False
        index = file_index(path)
        if _MARKER not in index or BITS_KEY not in index:
            return False
        size = index[BITS_KEY][0]
        # Another width than the releases': every MaskBit name fits, and the caller must choose.
        return size == bits or size not in BITS
    return recognizes


def _factory(bits: int):
    return public_factory(
        Release(f"maskbit-{bits}bit", "maskbit", f"maskbit_tokenizer_{bits}bit.bin (bare state dict)",
                f"huggingface.co/markweber/maskbit_tokenizer_{bits}bit; github.com/markweberdev/maskbit",
                PREPROCESSING),
        build, _recognizes(bits))


build_10bit, build_12bit, build_14bit, build_16bit, build_18bit = (_factory(b) for b in BITS)


def build_maskbit_family(**options: Any) -> MaskBitTokenizer:
    """The ``maskbit`` family: rebuilds the architecture from a tokbench checkpoint's config."""
    return MaskBitTokenizer(**options)
