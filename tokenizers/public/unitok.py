"""UniTok's release (FoundationVision/UniTok ``unitok_tokenizer.pth``, UniTok-Large) -> `UniTokTokenizer`.

The file is upstream's training checkpoint, ``torch.save({"args": Args.state_dict(), "epoch",
"iter", "trainer": {"config", "unitok", ...}})``; ``inference.py`` rebuilds ``UniTok(args)`` and
loads ``["trainer"]["unitok"]``. Only the reconstruction path is mapped: the CLIP half of the
state dict (``text_encoder.*``, ``fc_norm``, ``projection``, ``logit_scale``) is dropped, as are
the quantizer's ``vocab_usage`` statistics and the projections' ``zero_k_bias`` (a constant zero
buffer). Sizes are read off the tensors; the ViT head count, which they do not show, comes from
``args["model"]`` (upstream's ViTamin registrations). Ids: see `unitok_model` (a ``sequence``
of ``h*w*num_codebooks`` sub-ids, codebook innermost).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tokbench.checkpoint import CheckpointError
from tokbench.tokenizers.public.conv_keys import count_indexed
from tokbench.tokenizers.public.keymap import KeyMap, load_converted
from tokbench.tokenizers.public.release import (PICKLE_SUFFIXES, Release, drop, file_index, options_read_off,
                                                public_factory, read_any, refuse_fixed_overrides, resolve_options)
from tokbench.tokenizers.public.unitok_model import UniTokTokenizer

IGNORED_PREFIXES = ("text_encoder.", "fc_norm.", "projection.")
IGNORED_KEYS = ("logit_scale", "quant_proj.attn.zero_k_bias", "post_quant_proj.attn.zero_k_bias")
IGNORED_SUFFIXES = (".vocab_usage",)
OWN_BUFFERS = (".step", ".last_hit_step", ".last_restart_step", ".hit_ema")
# ViT heads of upstream's ViTamin registrations (models/vitamin.py), by Args.model.
VITAMIN_HEADS = {"vitamin_small": 6, "vitamin_base": 12, "vitamin_base_256": 12, "vitamin_large": 16}
PREPROCESSING = ("resize the shorter side to 288 (img_size * resize_ratio 1.125, bilinear), center crop 256x256 "
                 "(inference.py); then 2x - 1")
RELEASE = dict(stem=160, dims=(160, 320), depths=(2, 4), width=1024, depth=31, heads=16, dec_dims=(320, 160),
               dec_depths=(4, 2), vocab_size=32768, vocab_width=64, num_codebooks=8)
FIXED = ("num_codebooks", "vocab_size", "vocab_width")
_BACKBONE = "encoder.patch_embed.backbone."


def options_from_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Sizes read off a UniTok state dict (KeyError/IndexError if it is not this layout)."""
    num_codebooks = count_indexed(state, "quantizer.codebooks.")
    codebook_size, code_dim = state["quantizer.codebooks.0.codebook.weight"].shape
    return dict(
        stem=state[_BACKBONE + "stem.conv1.weight"].shape[0],
        dims=tuple(state[f"{_BACKBONE}stages.{s}.0.conv3_1x1.weight"].shape[0] for s in range(2)),
        depths=tuple(count_indexed(state, f"{_BACKBONE}stages.{s}.") for s in range(2)),
        width=state["encoder.pos_embed"].shape[-1], depth=count_indexed(state, "encoder.blocks."),
        dec_dims=(state["decoder.up_conv1.conv.weight"].shape[0],
                  state["decoder.up_conv3.0.conv3_1x1.weight"].shape[0]),
        dec_depths=tuple(count_indexed(state, f"decoder.up_conv{i}.") for i in (2, 3)),
        vocab_size=num_codebooks * codebook_size, vocab_width=num_codebooks * code_dim, num_codebooks=num_codebooks)


def options_from_args(args: Any, where: str) -> dict[str, Any]:
    """The head count from upstream's ``Args``; a `CheckpointError` for a variant not mapped."""
    if not isinstance(args, dict):
        return {}
    if args.get("quant_proj", "attn") != "attn" or args.get("num_query", 0):
        raise CheckpointError(f"{where}: a UniTok with quant_proj={args.get('quant_proj')!r}, "
                              f"num_query={args.get('num_query')!r}; only the released quant_proj='attn', "
                              "num_query=0 is supported")
    model = args.get("model")
    if model not in VITAMIN_HEADS:
        raise CheckpointError(f"{where}: args model={model!r} is none of upstream's ViTamin sizes "
                              f"({', '.join(VITAMIN_HEADS)})")
    return {"heads": VITAMIN_HEADS[model]}


def keymap_for(model: UniTokTokenizer) -> KeyMap:
    """Every tensor under upstream's name, but the codebooks (``codebook.weight`` -> ``embedding``)."""
    km = KeyMap()
    for key in model.state_dict():
        if key.startswith("quantizer."):
            if key.endswith(".embedding"):
                km.rename(key, key.replace(".embedding", ".codebook.weight"))
            continue
        km.rename(key, key)
    return km


def read_release(path: Path) -> tuple[dict[str, torch.Tensor], Any]:
    """The ``unitok`` state dict (without its CLIP half and statistics) and upstream's ``args``."""
    blob = read_any(path)
    trainer = blob.get("trainer") if isinstance(blob, dict) else None
    if not isinstance(trainer, dict) or not isinstance(trainer.get("unitok"), dict):
        top = sorted(map(str, blob))[:8] if isinstance(blob, dict) else type(blob).__name__
        raise CheckpointError(f"{path}: not a UniTok checkpoint (expected ['trainer']['unitok'], found {top})")
    state = drop(trainer["unitok"], IGNORED_PREFIXES, IGNORED_KEYS)
    return {k: v for k, v in state.items() if not k.endswith(IGNORED_SUFFIXES)}, blob.get("args")


def build(release: Release, weights: Path | None, **overrides: Any) -> UniTokTokenizer:
    refuse_fixed_overrides(release, RELEASE, overrides)
    if weights is None:
        return UniTokTokenizer(**resolve_options(release.name, RELEASE, {}, overrides))
    state, args = read_release(weights)
    from_file = {**options_read_off(options_from_state, state), **options_from_args(args, str(weights))}
    model = UniTokTokenizer(**resolve_options(release.name, RELEASE, from_file, overrides, source=str(weights)))
    source = f"{weights} (as {release.name})"
    load_converted(model, keymap_for(model).apply(state, source), source, OWN_BUFFERS)
    return model.eval()


def recognizes(path: Path) -> bool:
    """Upstream's checkpoint container: top-level ``args`` and ``trainer`` (what ``inference.py`` reads)."""
    if path.is_dir() or path.suffix not in PICKLE_SUFFIXES:
        return False
    return {"args", "trainer"} <= set(file_index(path))


def build_unitok_family(**options: Any) -> UniTokTokenizer:
    """The ``unitok`` family: rebuilds a UniTok from a tokbench checkpoint's config."""
    return UniTokTokenizer(**options)


build_large = public_factory(
    Release("unitok-large", "unitok", "unitok_tokenizer.pth (torch.save; weights under ['trainer']['unitok'])",
            "huggingface.co/FoundationVision/unitok_tokenizer", PREPROCESSING, fixed=FIXED),
    build, recognizes)
