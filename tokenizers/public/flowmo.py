"""FlowMo-Lo / FlowMo-Hi (kylesargent/FlowMo, ``flowmo_{lo,hi}.pth``) -> `FlowMoTokenizer`.

Release configuration (``flowmo/configs/base.yaml`` with the README's overrides): patch size 4,
256 code tokens, an encoder 768 wide (``enc_mup_width=4``: 4 x 192), 8 blocks, and a decoder
1,152 wide (``mup_width=6``), 16 blocks, both 12 heads, MLP ratio 4, RoPE axes of
``(1, 7, 7) / 16`` of a head's dimension -- ``(8, 28, 28)`` and ``(12, 42, 42)``.
FlowMo-Lo: ``context_dim=18, codebook_size_for_entropy=9`` (512 ids of 9 bits = 4,608 bits per
image); FlowMo-Hi: ``56`` and ``14`` (1,024 ids of 14 bits = 14,336 bits). The ids' bits per id
are not in the file, so the release fixes them; every size is read off the tensors (the RoPE
axes follow upstream's scaling rule when the head dimension is a multiple of 16), except the number
of code tokens (the encoder's text stream is all zeros: its length is not in the file), 256.

The file (``flowmo/train.py``'s checkpoint) is ``{"total_steps", "model_ema_state_dict",
"model_state_dict"}``; upstream evaluation loads ``model_ema_state_dict`` (``eval.state_dict_key``),
and so does this loader. The sampler is ``base.yaml``'s ``eval.sampling`` (options
``sample_steps``, ``schedule``, ``cfg``, ``cfg_interval``, ``seed``; see `FlowMoTokenizer`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tokbench.checkpoint import CheckpointError
from tokbench.tokenizers.public.flowmo_model import FlowMoTokenizer
from tokbench.tokenizers.public.keymap import load_converted
from tokbench.tokenizers.public.release import (PICKLE_SUFFIXES, Release, file_index, options_read_off,
                                                public_factory, read_any, refuse_fixed_overrides, resolve_options,
                                                state_dict_of, the_one_file)

_BASE = dict(patch_size=4, code_length=256, enc_width=768, enc_depth=8, enc_heads=12, enc_axes=(8, 28, 28),
             dec_width=1152, dec_depth=16, dec_heads=12, dec_axes=(12, 42, 42), mlp_ratio=4.0)
RELEASES = {"flowmo-lo": dict(_BASE, context_dim=18, bits=9), "flowmo-hi": dict(_BASE, context_dim=56, bits=14)}
CONTAINERS = ("model_ema_state_dict",)
CONTEXT_KEY = "encoder.final_layer_txt.linear.weight"  # (context_dim, enc_width)
PREPROCESSING = ("resized (shorter side, torchvision Resize on PIL) to 256 and center-cropped; "
                 "inputs mapped to [-1, 1]; reconstructions clamped to [-1, 1]; bf16 autocast on GPUs")
OWN_BUFFERS = ("quantize.step", "quantize.last_hit_step", "quantize.hit_ema")


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """Upstream's RoPE split at ``width = head_dim / 16``: ``(8, 28, 28) * width / 4``."""
    w = head_dim // 16
    return (2 * w, 7 * w, 7 * w)


def _depth(state: dict[str, torch.Tensor], part: str) -> int:
    return len({k.split(".")[2] for k in state if k.startswith(f"{part}.double_blocks.")})


def infer_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Sizes read off the tensors (KeyError if the file is not FlowMo's layout)."""
    found: dict[str, Any] = dict(patch_size=round((state["encoder.img_in.weight"].shape[1] // 3) ** 0.5),
                                 context_dim=state[CONTEXT_KEY].shape[0],
                                 mlp_ratio=state["encoder.double_blocks.0.img_mlp.0.weight"].shape[0]
                                 / state["encoder.img_in.weight"].shape[0])
    for part in ("enc", "dec"):
        prefix = "encoder" if part == "enc" else "decoder"
        width = state[f"{prefix}.img_in.weight"].shape[0]
        head_dim = state[f"{prefix}.double_blocks.0.img_attn.norm.query_norm.scale"].shape[0]
        found.update({f"{part}_width": width, f"{part}_depth": _depth(state, prefix),
                      f"{part}_heads": width // head_dim})
    return found


def with_rope_axes(options: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Options whose RoPE axes, unless given, follow upstream's rule for the head dimension
    (the axes are not in the file; a head dimension that is not a multiple of 16 needs them given)."""
    options = dict(options)
    for part in ("enc", "dec"):
        head_dim = options[f"{part}_width"] // options[f"{part}_heads"]
        if f"{part}_axes" not in overrides and head_dim % 16 == 0:
            options[f"{part}_axes"] = rope_axes(head_dim)
    return options


def build(release: Release, weights: Path | None, **overrides: Any) -> FlowMoTokenizer:
    base = RELEASES[release.name]
    refuse_fixed_overrides(release, base, overrides)
    if weights is None:
        return FlowMoTokenizer(**resolve_options(release.name, base, {}, overrides))
    weights = the_one_file(weights, PICKLE_SUFFIXES, "FlowMo .pth file")
    state = state_dict_of(read_any(weights), weights, CONTAINERS)  # the EMA weights, as upstream evaluates
    from_file = options_read_off(infer_config, state)
    if from_file and from_file["context_dim"] % base["bits"]:
        raise CheckpointError(f"{weights}: context_dim {from_file['context_dim']} is not a multiple of "
                              f"{release.name}'s {base['bits']} bits per id (FlowMo-Lo: 18 channels, "
                              "FlowMo-Hi: 56)")
    options = resolve_options(release.name, base, from_file, overrides, source=str(weights))
    model = FlowMoTokenizer(**with_rope_axes(options, overrides))
    load_converted(model, state, f"{weights} (as {release.name})", OWN_BUFFERS)
    return model.eval()


def _recognizes(name: str):
    """A FlowMo checkpoint whose code has the release's channels (18 / 56), or a count that
    neither has (then both names fit, and the caller must choose)."""
    own = RELEASES[name]["context_dim"]
    key = f"{CONTAINERS[0]}/{CONTEXT_KEY}"

    def recognizes(path: Path) -> bool:
        if path.is_dir() or path.suffix not in PICKLE_SUFFIXES:
            return False
        index = file_index(path)
        if key not in index or f"{CONTAINERS[0]}/decoder.txt_in.weight" not in index:
            return False
        channels = index[key][0]
        return channels == own or channels not in {r["context_dim"] for r in RELEASES.values()}
    return recognizes


def _factory(name: str, file: str):
    return public_factory(
        Release(name, "flowmo", f"{file} (model_ema_state_dict; FlowMo train.py checkpoint)",
                "huggingface.co/ksarge/FlowMo; github.com/kylesargent/FlowMo", PREPROCESSING, fixed=("bits",)),
        build, _recognizes(name))


build_lo = _factory("flowmo-lo", "flowmo_lo.pth")
build_hi = _factory("flowmo-hi", "flowmo_hi.pth")


def build_flowmo_family(**options: Any) -> FlowMoTokenizer:
    """The ``flowmo`` family: rebuilds a FlowMo from a tokbench checkpoint's config."""
    return FlowMoTokenizer(**options)
