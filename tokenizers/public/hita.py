"""Hita's released tokenizers (huggingface.co/yexiguafu/hita-gen: ``vanilla/tokenizer/hita-tok.pt``,
Hita-V; ``ultra/tokenizer/hita-ultra.pt``, Hita-U) -> `HitaTokenizer`.

A release is ``torch.save({"model": VQModel.state_dict(), ...})`` (CVMI-Lab/Hita ``vq_train.py``;
upstream's evaluation reads ``ema`` first, then ``model``, then ``state_dict``, and so does this
loader; a full training checkpoint's optimizer states and pickled ``argparse`` ``args`` are read
as inert data and not used). The state dict holds the frozen DINOv2 ViT-L/14 (with registers) that the encoder looks
through, under ``encode_transformer.backbone.pretrained_encoder.``: it is read from the file,
never downloaded. Both releases use ``configs/hita_vqgan{,_ultra}.yaml`` with LlamaGen's VQ-16
conv autoencoder at ``--z-channels 512`` and 336 px images (21x21 patches + 128 holistic tokens =
569 ids). Hita-U adds a head that reconstructs DINO features for training
(``decode_transformer.{mask_embedding,norm_vfm,proj}``); the image path does not use it and it is
not loaded. Sizes that the tensors show are read off them.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from tokbench.tokenizers.public.conv_keys import autoencoder_keymap, count_indexed
from tokbench.tokenizers.public.hita_model import HitaTokenizer
from tokbench.tokenizers.public.keymap import KeyMap, load_converted
from tokbench.tokenizers.public.release import (PICKLE_SUFFIXES, Release, drop, file_keys, public_factory, read_any,
                                                refuse_fixed_overrides, resolve_options, state_dict_of, options_read_off)

CONTAINERS = ("ema", "model", "state_dict")  # upstream's evaluation order (reconstruction_vq_ddp.py)
DINO = "encode_transformer.backbone.pretrained_encoder."
VFM_HEAD = "decode_transformer.mask_embedding", "decode_transformer.norm_vfm.", "decode_transformer.proj."
# Training-only: codebook usage history; DINO's mask token (masked training); Hita-U's VFM head.
IGNORED_PREFIXES = ("quantize.codebook_used", "slot_quantize.codebook_used", DINO + "mask_token", *VFM_HEAD)
OWN_BUFFERS = ("quantize.step", "quantize.last_hit_step", "quantize.last_restart_step", "quantize.hit_ema")
PREPROCESSING = ("ADM center crop to 336x336 (shorter side halved with BOX while >= 2x the target, then BICUBIC), "
                 "then (x - 0.5) / 0.5; upstream scores rFID on the 336 px output resized to 256 (bicubic)")

_RELEASE = dict(image_size=336, ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, dim=512, depth=3, heads=8,
                head_dim=64, mlp_dim=2048, num_slots=128, shift_k=4, codebook_size=16384, code_dim=8, slot_code_dim=12,
                dino_width=1024, dino_depth=24, dino_heads=16, dino_patch_size=14, dino_grid=37, dino_registers=4,
                dino_image_size=224)
RELEASES = {"hita-vqgan": _RELEASE, "hita-vqgan-ultra": _RELEASE}
# Fixed by the upstream code rather than by any tensor shape.
FIXED = ("shift_k", "dino_image_size", "dino_registers")

# tokbench attention names -> upstream's: the bidirectional stack uses CrossAttention's, the
# causal ones Attention3's.
_ATTN_NAMES = {True: {"q": "to_q", "k": "to_k", "v": "to_v", "out": "to_out.0"},
               False: {"q": "q_proj", "k": "k_proj", "v": "v_proj", "out": "out_proj"}}


def upstream_name(key: str) -> str:
    """The released name of a `HitaTokenizer` tensor outside the conv autoencoder and codebooks."""
    if key.startswith("encode_transformer.dino."):
        return DINO + key[len("encode_transformer.dino."):]
    if key.startswith("encode_transformer.proj."):
        return "encode_transformer.proj.mlp." + key[len("encode_transformer.proj."):]
    if ".attn1." in key:
        head, tail = key.split(".attn1.", 1)
        proj, param = tail.split(".", 1)
        return f"{head}.attn1.{_ATTN_NAMES['.transformer1.' in key][proj]}.{param}"
    return key


def keymap_for(model: HitaTokenizer) -> KeyMap:
    c = model.config
    km = autoencoder_keymap("llamagen", c["ch"], tuple(c["ch_mult"]), c["num_res_blocks"], lowest_level_attn=True)
    done = {e.dst for e in km.entries}
    for key in model.state_dict():
        if key in done or key.endswith(OWN_BUFFERS) or key in ("quantize.embedding", "slot_quantize.embedding"):
            continue
        km.rename(key, upstream_name(key))
    km.rename("quantize.embedding", "quantize.embedding.weight")
    km.rename("slot_quantize.embedding", "slot_quantize.embedding.weight")
    return km


def options_from_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Sizes read off a Hita state dict (KeyError where a tensor is missing). Head counts and the
    SwiGLU width are not visible in the shapes: they come from the release (or the caller)."""
    ch = state["encoder.conv_in.weight"].shape[0]
    levels = count_indexed(state, "encoder.conv_blocks.")
    if levels == 0:
        raise KeyError("encoder.conv_blocks.0")
    codebook_size, code_dim = state["quantize.embedding.weight"].shape
    widths = [state[f"encoder.conv_blocks.{i}.res.0.conv1.weight"].shape[0] for i in range(levels)]
    return dict(
        ch=ch, ch_mult=tuple(w // ch for w in widths),
        num_res_blocks=count_indexed(state, "encoder.conv_blocks.0.res."), dim=state["quant_conv.weight"].shape[1],
        depth=count_indexed(state, "encode_transformer.transformer1.layers."),
        image_size=math.isqrt(state["encode_transformer.pos_embed"].shape[1]) * 2 ** (levels - 1),
        num_slots=state["encode_transformer.carrier_tokens"].shape[1], codebook_size=codebook_size,
        code_dim=code_dim, slot_code_dim=state["slot_quantize.embedding.weight"].shape[1],
        dino_width=state[DINO + "cls_token"].shape[-1], dino_depth=count_indexed(state, DINO + "blocks."),
        dino_patch_size=state[DINO + "patch_embed.proj.weight"].shape[-1],
        dino_grid=math.isqrt(state[DINO + "pos_embed"].shape[1] - 1))


def read_state(path: Path) -> dict[str, torch.Tensor]:
    return drop(state_dict_of(read_any(path), path, CONTAINERS), prefixes=IGNORED_PREFIXES)


def build(release: Release, weights: Path | None, **overrides: Any) -> HitaTokenizer:
    base = RELEASES[release.name]
    refuse_fixed_overrides(release, base, overrides)
    if weights is None:
        return HitaTokenizer(**resolve_options(release.name, base, {}, overrides))
    state = read_state(weights)
    from_file = options_read_off(options_from_state, state)
    model = HitaTokenizer(**resolve_options(release.name, base, from_file, overrides, source=str(weights)))
    source = f"{weights} (as {release.name})"
    load_converted(model, keymap_for(model).apply(state, source), source, OWN_BUFFERS)
    return model.eval()


def _recognizes(ultra: bool):
    def recognizes(path: Path) -> bool:
        if path.is_dir() or path.suffix not in PICKLE_SUFFIXES:
            return False
        keys = file_keys(path)
        inner = {k.split("/", 1)[1] for k in keys if "/" in k and k.split("/", 1)[0] in CONTAINERS} or set(keys)
        return "encode_transformer.carrier_tokens" in inner and ("decode_transformer.mask_embedding" in inner) == ultra
    return recognizes


def build_hita_family(**options: Any) -> HitaTokenizer:
    """The ``hita`` family: rebuilds a Hita tokenizer from a tokbench checkpoint's config."""
    return HitaTokenizer(**options)


_WHERE = "huggingface.co/yexiguafu/hita-gen; github.com/CVMI-Lab/Hita"
build_vanilla = public_factory(
    Release("hita-vqgan", "hita", "vanilla/tokenizer/hita-tok.pt (Hita-V)", _WHERE, PREPROCESSING, fixed=FIXED),
    build, _recognizes(ultra=False))
build_ultra = public_factory(
    Release("hita-vqgan-ultra", "hita", "ultra/tokenizer/hita-ultra.pt (Hita-U)", _WHERE, PREPROCESSING, fixed=FIXED),
    build, _recognizes(ultra=True))
