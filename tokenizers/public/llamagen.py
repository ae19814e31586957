"""LlamaGen's VQ tokenizers (FoundationVision/LlamaGen ``vq_ds16_c2i.pt``, ``vq_ds8_c2i.pt``, and the
text-to-image ``vq_ds16_t2i.pt``, the same VQ-16 architecture and container) -> ``vq``.

The released file is ``torch.save({"model": state_dict})``. Everything the architecture
needs is read off the tensors: width from ``encoder.conv_in``, the levels and their
multipliers from ``encoder.conv_blocks.{i}``, the codebook from ``quantize.embedding``.
Codes and features are l2-normalized before the nearest search (the family's
``l2_normalize``); attention follows every ResNet block of the lowest level and the middle.
Images go in as ``2x - 1`` and come out as ``(y + 1) / 2``, the family's own range.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tokbench.tokenizers.public.conv_keys import autoencoder_keymap, count_indexed, encoder_sizes
from tokbench.tokenizers.public.keymap import load_converted
from tokbench.tokenizers.public.release import (PICKLE_SUFFIXES, Release, drop, file_keys, public_factory, read_any,
                                                resolve_options, state_dict_of, options_read_off)
from tokbench.tokenizers.vq import VQTokenizer

CONTAINERS = ("ema", "model", "state_dict")  # upstream's own search order
IGNORED_KEYS = ("quantize.codebook_used",)  # usage history of training: unused at inference
OWN_BUFFERS = ("quantize.step", "quantize.last_hit_step", "quantize.last_restart_step", "quantize.hit_ema")
PREPROCESSING = ("ADM center crop: shorter side halved with BOX while >= 2x the target, then BICUBIC to 256, "
                 "center crop 256x256; then (x - 0.5) / 0.5")

RELEASES = {
    "llamagen-vq16": dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=256,
                          codebook_size=16384, code_dim=8),
    "llamagen-vq16-t2i": dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=256,
                              codebook_size=16384, code_dim=8),
    "llamagen-vq8": dict(ch=128, ch_mult=(1, 2, 2, 4), num_res_blocks=2, z_channels=256,
                         codebook_size=16384, code_dim=8),
}
FAMILY_DEFAULTS = dict(l2_normalize=True, lowest_level_attn=True)


def infer_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Architecture options read off a LlamaGen VQ state dict (KeyError if it is not one)."""
    sizes = encoder_sizes(state, stack="encoder.conv_blocks", block="res")
    codebook_size, code_dim = state["quantize.embedding.weight"].shape
    return dict(sizes, z_channels=state["quant_conv.weight"].shape[1], codebook_size=codebook_size, code_dim=code_dim)


def keymap_for(options: dict[str, Any]):
    km = autoencoder_keymap("llamagen", options["ch"], tuple(options["ch_mult"]), options["num_res_blocks"],
                            attn_levels=options.get("attn_levels"), lowest_level_attn=options["lowest_level_attn"])
    km.rename("quantize.embedding", "quantize.embedding.weight")
    return km


def read_state(path: Path) -> dict[str, torch.Tensor]:
    return drop(state_dict_of(read_any(path), path, CONTAINERS), keys=IGNORED_KEYS)


def build_from_state(name: str, base: dict[str, Any], state: dict[str, torch.Tensor] | None,
                     overrides: dict[str, Any], source: str) -> VQTokenizer:
    """A `VQTokenizer` at ``base`` options, with LlamaGen-named weights ``state`` when given
    (also used by adapters whose files embed a LlamaGen VQ, such as Janus)."""
    if state is None:
        return VQTokenizer(**resolve_options(name, base, {}, overrides))
    from_file = options_read_off(infer_config, state)
    options = resolve_options(name, base, from_file, overrides, source=source)
    model = VQTokenizer(**options)
    converted = keymap_for(options).apply(state, f"{source} (as {name})")
    load_converted(model, converted, f"{source} (as {name})", OWN_BUFFERS)
    return model.eval()


def build(release: Release, weights: Path | None, **overrides: Any) -> VQTokenizer:
    base = {**RELEASES[release.name], **FAMILY_DEFAULTS}
    state = None if weights is None else read_state(weights)
    return build_from_state(release.name, base, state, overrides, str(weights))


def _recognizes(levels: int):
    def recognizes(path: Path) -> bool:
        if path.is_dir() or path.suffix not in PICKLE_SUFFIXES:
            return False
        keys = file_keys(path)
        inner = {k.split("/", 1)[1] for k in keys if "/" in k and k.split("/", 1)[0] in CONTAINERS} or set(keys)
        if "s2to1encoder.encoder_embed.weight" in inner:
            return False  # GigaTok: LlamaGen's CNN names around a Q-former
        return "quantize.codebook_used" in inner and count_indexed(dict.fromkeys(inner), "encoder.conv_blocks.") == levels
    return recognizes


build_vq16 = public_factory(
    Release("llamagen-vq16", "vq", "vq_ds16_c2i.pt", "huggingface.co/FoundationVision/LlamaGen", PREPROCESSING),
    build, _recognizes(5))
build_vq8 = public_factory(
    Release("llamagen-vq8", "vq", "vq_ds8_c2i.pt", "huggingface.co/FoundationVision/LlamaGen", PREPROCESSING),
    build, _recognizes(4))
# Same keys as the c2i VQ-16 (so a file is recognised as llamagen-vq16): load it by this name.
build_vq16_t2i = public_factory(
    Release("llamagen-vq16-t2i", "vq", "vq_ds16_t2i.pt", "huggingface.co/peizesun/llamagen_t2i",
            "none fixed for evaluation by the release (t2i training at 256 then 512 px); inputs (x - 0.5) / 0.5"),
    build, None)
