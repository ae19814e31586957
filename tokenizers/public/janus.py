"""Janus / Janus-Pro's image-generation VQ (deepseek-ai/Janus ``gen_vision_model``) -> ``vq``.

The tokenizer ships inside the multimodal LLM's checkpoint, under the prefix
``gen_vision_model.``: a Hugging Face folder with ``pytorch_model.bin`` or
``model.safetensors``, or shards listed by ``*.index.json`` (``weight_map``). Only the shards
that hold ``gen_vision_model.*`` tensors are read (safetensors shards only those tensors),
and every other tensor of the LLM is ignored. Janus-Pro-7B ships ``pytorch_model-*.bin`` shards with
an index; Janus-1.3B one ``model.safetensors`` -- the same VQ-16, so one name reads both.

Janus's ``janus/models/vq_model.py`` is LlamaGen's VQ-16 (the modules' syntax trees are
identical at inference; Janus only adds a bfloat16 branch to the nearest upsampling and
drops the training-time usage count), so the tensors load through the LlamaGen adapter:
16,384 l2-normalized codes of dimension 8, f16; Janus generates 384 px images (24 x 24 ids).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from tokbench.checkpoint import CheckpointError
from tokbench.tokenizers.public import llamagen
from tokbench.tokenizers.public.release import Release, public_factory, read_any, state_dict_of
from tokbench.tokenizers.vq import VQTokenizer

PREFIX = "gen_vision_model."
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
PREPROCESSING = "Janus generates 384x384 images (resize + center crop to 384); inputs (x - 0.5) / 0.5"


def _shards(folder: Path) -> list[Path]:
    """The files of a checkpoint folder that hold ``gen_vision_model.*`` tensors."""
    for name in INDEX_FILES:
        index = folder / name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise CheckpointError(f"{index}: not a sharded-checkpoint index with a weight_map ({err})") from err
            files = sorted({f for k, f in weight_map.items() if k.startswith(PREFIX)})
            if not files:
                raise CheckpointError(f"{index}: no {PREFIX}* tensors listed (not a Janus checkpoint?)")
            return [folder / f for f in files]
    for name in SINGLE_FILES:
        if (folder / name).is_file():
            return [folder / name]
    raise CheckpointError(f"{folder}: no {' / '.join(INDEX_FILES + SINGLE_FILES)}")


def _read_prefixed(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: listed by the index but missing")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), "pt") as f:  # only the tokenizer's tensors, not the LLM's
                return {k[len(PREFIX):]: f.get_tensor(k) for k in f.keys() if k.startswith(PREFIX)}
        except (OSError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({err})") from err
    state = state_dict_of(read_any(path), path, ("state_dict", "model"))
    return {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}


def read_state(weights: Path) -> dict[str, torch.Tensor]:
    """The ``gen_vision_model.`` tensors, prefix removed, upcast to float32."""
    files = _shards(weights) if weights.is_dir() else [weights]
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(_read_prefixed(file))
    if not state:
        raise CheckpointError(f"{weights}: no {PREFIX}* tensors (not a Janus checkpoint?)")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return {k: v for k, v in state.items() if k not in llamagen.IGNORED_KEYS}


def build(release: Release, weights: Path | None, **overrides: Any) -> VQTokenizer:
    base = {**llamagen.RELEASES["llamagen-vq16"], **llamagen.FAMILY_DEFAULTS}
    if weights is None:
        return llamagen.build_from_state(release.name, base, None, overrides, "")
    return llamagen.build_from_state(release.name, base, read_state(weights), overrides, str(weights))


build_janus_pro_vq = public_factory(
    Release("janus-pro-vq", "vq",
            "the Janus-Pro-1B/7B or Janus-1.3B checkpoint folder (its gen_vision_model.* tensors)",
            "huggingface.co/deepseek-ai/Janus-Pro-7B (or -1B, Janus-1.3B)", PREPROCESSING),
    build, None)
