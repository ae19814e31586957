"""latent-diffusion's VQ first stages (CompVis ``vq-f4.zip``, ``vq-f8.zip``) -> ``vq``.

Each release unpacks to ``model.ckpt`` (a pytorch-lightning 1.4 checkpoint of
``ldm.models.autoencoder.VQModel``: ``state_dict`` with the training loss's ``loss.*``, which is
ignored) beside ``config.yaml`` (``model.params``: ``embed_dim``, ``n_embed``, ``ddconfig``). The model is
taming's VQGAN layout with LDM's ``Encoder``/``Decoder`` -- the same tensors and computation -- and
taming's ``VectorQuantizer2`` (nearest code in L2, codes as they are), so taming's loader does the
work; only the sizes differ: 3-dimensional codes at f4 (8,192 of them, no attention outside the
middle blocks), 4-dimensional at f8 (16,384, attention at the 32 px level). ``config.yaml`` is read
when it lies beside the file, else the sizes are read off the tensors. ``vq-f8-n256`` (256 codes) loads
under ``ldm-vq-f8`` with its own codebook size from the file; ``vq-f4-noattn`` (``attn_type: none``:
no attention in the middle blocks) is refused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tokbench.checkpoint import CheckpointError
from tokbench.tokenizers.public import taming
from tokbench.tokenizers.public.conv_keys import count_indexed
from tokbench.tokenizers.public.release import (PICKLE_SUFFIXES, Release, drop, file_index, options_read_off,
                                                public_factory, read_any, resolve_options, state_dict_of)
from tokbench.tokenizers.vq import VQTokenizer

PREPROCESSING = ("none stated by the release (the README's rFID/PSNR are 'vs val'; the configs train on "
                 "OpenImages, whose data module is not in the repository); inputs 2x - 1")
_LDM = dict(ch=128, num_res_blocks=2, l2_normalize=False, lowest_level_attn=False)
RELEASES = {
    "ldm-vq-f4": dict(_LDM, ch_mult=(1, 2, 4), z_channels=3, attn_levels=(), codebook_size=8192, code_dim=3),
    "ldm-vq-f8": dict(_LDM, ch_mult=(1, 2, 2, 4), z_channels=4, attn_levels=(3,), codebook_size=16384, code_dim=4),
}
LEVELS = {"ldm-vq-f4": 3, "ldm-vq-f8": 4}


def options_from_config(path: Path) -> dict[str, Any]:
    """Family options from LDM's ``config.yaml``; a variant without middle attention is refused."""
    try:
        attn_type = yaml.safe_load(path.read_text())["model"]["params"]["ddconfig"].get("attn_type", "vanilla")
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: not an LDM config.yaml with model.params.ddconfig ({err})") from err
    if attn_type != "vanilla":
        raise CheckpointError(f"{path}: ddconfig.attn_type={attn_type!r} is not supported (expected 'vanilla': "
                              "attention in the middle blocks)")
    return taming.options_from_yaml(path)


def build(release: Release, weights: Path | None, **overrides: Any) -> VQTokenizer:
    base = RELEASES[release.name]
    if weights is None:
        return VQTokenizer(**resolve_options(release.name, base, {}, overrides))
    state = drop(state_dict_of(read_any(weights), weights, ("state_dict",)), prefixes=("loss.",))
    config = weights.parent / "config.yaml"
    from_file = (options_from_config(config) if config.is_file()
                 else options_read_off(taming.options_from_state, state))
    return taming.load_taming_layout(release, base, state, from_file, overrides, weights,
                                     config if config.is_file() else weights)


def _recognizes(levels: int):
    def recognizes(path: Path) -> bool:
        if path.is_dir() or path.suffix not in PICKLE_SUFFIXES:
            return False
        index = file_index(path)
        codes = index.get("state_dict/quantize.embedding.weight")
        # LDM's latents are 3- or 4-dimensional; taming's and Chameleon's codes have 256 dimensions.
        return (codes is not None and len(codes) == 2 and codes[1] <= 4
                and count_indexed(index, "state_dict/encoder.down.") == levels)
    return recognizes


_WHERE = "ommer-lab.com/files/latent-diffusion/{0}.zip (github.com/CompVis/latent-diffusion, README model zoo)"
build_f4 = public_factory(
    Release("ldm-vq-f4", "vq", "vq-f4.zip: model.ckpt + config.yaml", _WHERE.format("vq-f4"), PREPROCESSING),
    build, _recognizes(LEVELS["ldm-vq-f4"]))
build_f8 = public_factory(
    Release("ldm-vq-f8", "vq", "vq-f8.zip: model.ckpt + config.yaml", _WHERE.format("vq-f8"), PREPROCESSING),
    build, _recognizes(LEVELS["ldm-vq-f8"]))
