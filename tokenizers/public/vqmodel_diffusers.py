"""diffusers ``VQModel`` releases: aMUSEd's VQ-GAN (HF ``amused/amused-256``, ``amused-512``: ``vqvae/``) -> ``vq``.

A diffusers ``VQModel`` folder (``config.json`` + ``diffusion_pytorch_model.safetensors``, or its
``.fp16.safetensors`` variant, upcast to float32; or a whole pipeline folder, whose ``vqvae/`` is
used) in diffusers' names: ``encoder.down_blocks``, ``decoder.up_blocks``, ``quant_conv``,
``quantize.embedding.weight``, ``post_quant_conv``. Sizes come from ``config.json``
(``block_out_channels``, ``layers_per_block``, ``latent_channels``, ``vq_embed_dim``,
``num_vq_embeddings``, ``mid_block_add_attention``); codes are compared as they are (nearest in L2).

aMUSEd's VQ-GAN (open-muse's, converted by diffusers' ``scripts/convert_amused.py``; the 256 and 512
pipelines ship the same one) has no attention anywhere and works on images in [0, 1]
(``VaeImageProcessor(do_normalize=False)``; its pipeline clips the decoding to [0, 1]): the
release fixes ``unit_range``. Kandinsky's MoVQ (``norm_type: "spatial"``: a decoder whose norms are
conditioned on the codes) is refused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tokbench.checkpoint import CheckpointError
from tokbench.tokenizers.public.conv_keys import add_autoencoder_part
from tokbench.tokenizers.public.keymap import KeyMap, load_converted
from tokbench.tokenizers.public.release import (Release, public_factory, read_any, read_json, refuse_fixed_overrides,
                                                resolve_options, state_dict_of)
from tokbench.tokenizers.public.sd_vae import as_float32
from tokbench.tokenizers.vq import VQTokenizer

WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
           "diffusion_pytorch_model.fp16.safetensors")
OWN_BUFFERS = ("quantize.step", "quantize.last_hit_step", "quantize.last_restart_step", "quantize.hit_ema")
PREPROCESSING_AMUSED = ("none fixed for evaluation by the release (aMUSEd trains at 256 / 512 px); inputs in "
                        "[0, 1] as they are, reconstructions clipped to [0, 1]")
RELEASES = {
    # diffusers scripts/convert_amused.py, make_vqvae: open-muse's VQ-GAN at f16.
    "amused-vqgan": dict(ch=128, ch_mult=(1, 2, 2, 4, 6), num_res_blocks=2, z_channels=64, codebook_size=8192,
                         code_dim=64, mid_attn=False, attn_levels=(), lowest_level_attn=False, l2_normalize=False,
                         unit_range=True),
}


def options_from_config(config: dict[str, Any], path: Path) -> dict[str, Any]:
    """Family options from a diffusers ``VQModel`` ``config.json``; what the family cannot build is refused."""
    if config.get("_class_name") != "VQModel":
        raise CheckpointError(f"{path}: _class_name {config.get('_class_name')!r}, expected 'VQModel'")
    if config.get("norm_type", "group") != "group":
        raise CheckpointError(f"{path}: norm_type={config['norm_type']!r} is not supported (expected 'group'; "
                              "'spatial' is Kandinsky's MoVQ decoder)")
    try:
        blocks = set(config["down_block_types"]) | set(config["up_block_types"])
        if not blocks <= {"DownEncoderBlock2D", "UpDecoderBlock2D"}:
            raise CheckpointError(f"{path}: block types {sorted(blocks)} not supported (expected DownEncoderBlock2D "
                                  "and UpDecoderBlock2D)")
        fixed = dict(act_fn="silu", norm_num_groups=32, in_channels=3, out_channels=3)
        for key, value in fixed.items():
            if config.get(key, value) != value:
                raise CheckpointError(f"{path}: {key}={config[key]!r} is not supported (expected {value!r})")
        boc = [int(c) for c in config["block_out_channels"]]
        if any(c % boc[0] for c in boc):
            raise CheckpointError(f"{path}: block_out_channels {boc} are not multiples of the first")
        latent = int(config["latent_channels"])
        return dict(ch=boc[0], ch_mult=tuple(c // boc[0] for c in boc), num_res_blocks=int(config["layers_per_block"]),
                    z_channels=latent, code_dim=int(config.get("vq_embed_dim") or latent),
                    codebook_size=int(config["num_vq_embeddings"]),
                    mid_attn=bool(config.get("mid_block_add_attention", True)))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: not a diffusers VQModel config ({err})") from err


def vqvae_folder(path: Path) -> Path:
    """The ``VQModel`` folder: the path itself, or a pipeline folder's ``vqvae/``."""
    return path / "vqvae" if (path / "model_index.json").is_file() else path


def keymap_for(options: dict[str, Any]) -> KeyMap:
    km = KeyMap()
    for part in ("encoder", "decoder"):
        add_autoencoder_part(km, "diffusers", part, options["ch"], tuple(options["ch_mult"]), options["num_res_blocks"],
                             set(options.get("attn_levels") or ()), mid_attn=options["mid_attn"])
    km.params("quant_conv", "quant_conv")
    km.params("post_quant_conv", "post_quant_conv")
    km.rename("quantize.embedding", "quantize.embedding.weight")
    return km


def build(release: Release, weights: Path | None, **overrides: Any) -> VQTokenizer:
    base = RELEASES[release.name]
    refuse_fixed_overrides(release, base, overrides)
    if weights is None:
        return VQTokenizer(**resolve_options(release.name, base, {}, overrides))
    folder = vqvae_folder(weights)
    if not folder.is_dir():
        raise CheckpointError(f"{weights}: expected a diffusers VQModel folder (config.json + {WEIGHTS[0]})")
    from_file = options_from_config(read_json(folder / "config.json"), folder / "config.json")
    file = next((folder / n for n in WEIGHTS if (folder / n).is_file()), None)
    if file is None:
        raise CheckpointError(f"{folder}: no {' or '.join(WEIGHTS)}")
    state = as_float32(state_dict_of(read_any(file), file, ()))
    options = resolve_options(release.name, base, from_file, overrides, source=str(folder / "config.json"))
    model = VQTokenizer(**options)
    source = f"{file} (as {release.name})"
    load_converted(model, keymap_for(options).apply(state, source), source, OWN_BUFFERS)
    return model.eval()


def recognizes_amused(path: Path) -> bool:
    """A diffusers VQModel folder (or pipeline) with group norms and no middle attention."""
    config = vqvae_folder(path) / "config.json"
    if not path.is_dir() or not config.is_file():
        return False
    blob = read_json(config)
    return (blob.get("_class_name") == "VQModel" and blob.get("norm_type", "group") == "group"
            and blob.get("mid_block_add_attention") is False)


build_amused = public_factory(
    Release("amused-vqgan", "vq", "vqvae/ folder (config.json + diffusion_pytorch_model.safetensors)",
            "huggingface.co/amused/amused-256 (and amused-512) vqvae/; diffusers scripts/convert_amused.py",
            PREPROCESSING_AMUSED, fixed=("unit_range",)), build, recognizes_amused)

__all__ = ["build_amused", "keymap_for", "options_from_config", "RELEASES"]
