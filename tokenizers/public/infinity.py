"""Infinity's tokenizers (FoundationVision/Infinity ``infinity_vae_d{16,24,32,64}.pth``,
``infinity_vae_d32reg.pth``) -> `InfinityTokenizer` (the ``infinity`` family).

Upstream loads every release the same way (``tools/run_infinity.py`` ``load_visual_tokenizer``,
``infinity/models/bsq_vae/vae.py`` ``vae_model``): ``codebook_dim = vae_type`` (16, 24, 32 or 64
bits per position), ``codebook_size = 2**codebook_dim`` (so no projections), ``patch_size=16``
with channel multipliers ``1,2,4,4,4`` at ``base_ch=128``, two ResNet blocks, no attention,
``schedule_mode="dynamic"``. The file is ``torch.save({"vae": state_dict, ...})``; upstream reads
``["vae"]`` with ``load_cnn``, which accepts both the model's own names (every conv and GroupNorm
wrapped: ``encoder.conv_in.conv.weight``, ``norm1.norm.weight``) and the bare LDM names
(``encoder.conv_in.weight``); so does this loader. Sizes are read off the tensors. The quantizer's
``lfq.mask`` buffer (powers of two for upstream's int labels; saved twice, as ``quantizer.`` and
``quantize.``, the same module under two attribute names) is not a weight and is ignored. Images go in
as ``2x - 1``; reconstructions are clamped to ``[-1, 1]`` (upstream's ``decode``).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from tokbench.tokenizers.public.conv_keys import add_autoencoder_part, encoder_sizes
from tokbench.tokenizers.public.infinity_model import INFINITY_SCALES, InfinityTokenizer
from tokbench.tokenizers.public.keymap import Entry, KeyMap, load_converted
from tokbench.tokenizers.public.release import (PICKLE_SUFFIXES, Release, drop, file_index, public_factory, read_any,
                                                resolve_options, state_dict_of, options_read_off)

IGNORED_KEYS = ("quantizer.lfq.mask", "quantize.lfq.mask")  # one buffer, under both of its names
WRAPPED_MARKER = "encoder.conv_in.conv.weight"
PREPROCESSING = ("resize the shorter side to 256 (bicubic), center crop 256x256 (tools/run_tokenizer.py; 512 for "
                 "the IN-512 column); then 2x - 1")
_RELEASE = dict(ch=128, ch_mult=(1, 2, 4, 4, 4), num_res_blocks=2, scales=INFINITY_SCALES)
RELEASE_BITS = {"infinity-vae-d16": 16, "infinity-vae-d24": 24, "infinity-vae-d32": 32, "infinity-vae-d32reg": 32,
                "infinity-vae-d64": 64}
RELEASES = {name: dict(_RELEASE, code_dim=bits) for name, bits in RELEASE_BITS.items()}
FILES = {"infinity-vae-d16": "infinity_vae_d16.pth", "infinity-vae-d24": "infinity_vae_d24.pth",
         "infinity-vae-d32": "infinity_vae_d32.pth", "infinity-vae-d32reg": "infinity_vae_d32reg.pth",
         "infinity-vae-d64": "infinity_vae_d64.pth"}
_WRAPPER = re.compile(r"\.(conv|norm)\.(weight|bias)$")


def wrapped_name(key: str) -> str:
    """An LDM name in the model's own spelling: ``X.weight`` -> ``X.norm.weight`` for GroupNorms,
    ``X.conv.weight`` for convs (every parameter of the model sits in one of the two wrappers)."""
    module, param = key.rsplit(".", 1)
    return f"{module}.{'norm' if module.rsplit('.', 1)[-1].startswith('norm') else 'conv'}.{param}"


def is_wrapped(state: dict[str, Any]) -> bool:
    return WRAPPED_MARKER in state


def infer_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Sizes read off the tensors, in either spelling (KeyError if the file is not this layout)."""
    if is_wrapped(state):
        state = {_WRAPPER.sub(r".\2", k): v for k, v in state.items()}
    return dict(encoder_sizes(state), code_dim=state["encoder.conv_out.weight"].shape[0])


def keymap_for(options: dict[str, Any], wrapped: bool = True) -> KeyMap:
    """The upstream names of every tensor (the model's own wrapped spelling, or the bare LDM one)."""
    km = KeyMap()
    for part in ("encoder", "decoder"):
        add_autoencoder_part(km, "ldm", part, options["ch"], tuple(options["ch_mult"]), options["num_res_blocks"],
                             set(), mid_attn=False)
    if wrapped:
        km.entries = [Entry(e.dst, tuple(wrapped_name(s) for s in e.srcs), e.combine) for e in km.entries]
    return km


def build(release: Release, weights: Path | None, **overrides: Any) -> InfinityTokenizer:
    base = RELEASES[release.name]
    if weights is None:
        return InfinityTokenizer(**resolve_options(release.name, base, {}, overrides))
    state = drop(state_dict_of(read_any(weights), weights, ("vae",)), keys=IGNORED_KEYS)
    from_file = options_read_off(infer_config, state)
    options = resolve_options(release.name, base, from_file, overrides, source=str(weights))
    model = InfinityTokenizer(**options)
    source = f"{weights} (as {release.name})"
    load_converted(model, keymap_for(options, is_wrapped(state)).apply(state, source), source)
    return model.eval()


def _recognizes(bits: int):
    def recognizes(path: Path) -> bool:
        if path.is_dir() or path.suffix not in PICKLE_SUFFIXES:
            return False
        index = file_index(path)
        if "vae/" + WRAPPED_MARKER not in index and "vae/quantizer.lfq.mask" not in index:
            return False
        conv_out = index.get("vae/encoder.conv_out.conv.weight") or index.get("vae/encoder.conv_out.weight")
        if not conv_out:
            return False
        # Another width than the releases': every Infinity name fits, and the caller must choose.
        return conv_out[0] == bits or conv_out[0] not in RELEASE_BITS.values()
    return recognizes


def build_infinity_family(**options: Any) -> InfinityTokenizer:
    """The ``infinity`` family: rebuilds the architecture from a tokbench checkpoint's config."""
    return InfinityTokenizer(**options)


def _factory(name: str):
    return public_factory(
        Release(name, "infinity", f"{FILES[name]} (torch.save dict, weights under 'vae')",
                "huggingface.co/FoundationVision/Infinity; github.com/FoundationVision/Infinity", PREPROCESSING),
        build, _recognizes(RELEASE_BITS[name]))


build_d16, build_d24, build_d32, build_d32reg, build_d64 = (_factory(n) for n in RELEASE_BITS)
