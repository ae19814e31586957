"""Stable Diffusion's KL-f8 VAE and MAR's KL-16 -> ``vae``.

Three released forms, one architecture:

* a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``/``.bin``; or a
  whole pipeline folder, whose ``vae/`` is used),
  diffusers naming (``down_blocks``, ``mid_block.attentions.0.to_q`` as Linear, or the
  older ``query/key/value/proj_attn``); sizes from ``config.json``;
* a standalone LDM ``.ckpt``/``.safetensors`` (``vae-ft-mse-840000-ema-pruned.ckpt``):
  LDM naming, plus ``model_ema.*``/``loss.*`` entries that are ignored;
* a full SD-1.x ``.ckpt``: the VAE under ``first_stage_model.``, the rest ignored.

LDM files carry no config: sizes are read off the tensors. Latents are the posterior
mean, not multiplied by the diffusion model's scaling factor (0.18215 for SD).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tokbench.checkpoint import CheckpointError
from tokbench.tokenizers.public.conv_keys import autoencoder_keymap, count_indexed
from tokbench.tokenizers.public.keymap import load_converted
from tokbench.tokenizers.public.release import (Release, drop, file_keys, public_factory, read_any, read_json,
                                                resolve_options, state_dict_of)
from tokbench.tokenizers.vae import VAETokenizer

SD_PREFIX = "first_stage_model."
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
LEGACY_ATTN = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}
PREPROCESSING_SD = "none fixed by the release (SD trains at 256/512 px, random crops); inputs 2x - 1"
PREPROCESSING_MAR = "ADM center crop to 256 (as LlamaGen); then 2x - 1"
RELEASES = {
    "sd-vae-kl-f8": dict(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, latent_channels=4),
    "sd-vae-ft-mse": dict(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, latent_channels=4),
    # MAR's encoder keeps LDM's default attention at 16 px (its lowest level); its decoder has none.
    "mar-kl16": dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, latent_channels=16, enc_attn_levels=(4,)),
}


def options_from_diffusers_config(config: dict[str, Any], path: Path) -> dict[str, Any]:
    try:
        boc = [int(c) for c in config["block_out_channels"]]
        blocks = set(config.get("down_block_types", [])) | set(config.get("up_block_types", []))
        if not blocks <= {"DownEncoderBlock2D", "UpDecoderBlock2D"}:
            raise CheckpointError(f"{path}: block types {sorted(blocks)} not supported (attention only in the middle)")
        if not config.get("use_quant_conv", True) or not config.get("use_post_quant_conv", True) \
                or not config.get("mid_block_add_attention", True):
            raise CheckpointError(f"{path}: variants without quant convs or mid attention are not supported")
        return dict(ch=boc[0], ch_mult=tuple(c // boc[0] for c in boc), num_res_blocks=int(config["layers_per_block"]),
                    latent_channels=int(config["latent_channels"]))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: not a diffusers AutoencoderKL config ({err})") from err


def options_from_ldm_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    ch = state["encoder.conv_in.weight"].shape[0]
    levels = count_indexed(state, "encoder.down.")
    if levels == 0 or any(k.startswith("quantize.") for k in state):
        raise KeyError("not an LDM KL autoencoder")  # e.g. a VQ model's file: the key check says what differs
    z_channels = state["decoder.conv_in.weight"].shape[1]
    embed_dim = state["quant_conv.weight"].shape[0] // 2
    if z_channels != embed_dim:
        raise CheckpointError(f"z_channels {z_channels} != embed_dim {embed_dim}: not supported by the vae family")
    return dict(ch=ch, ch_mult=tuple(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in range(levels)),
                num_res_blocks=count_indexed(state, "encoder.down.0.block."), latent_channels=embed_dim,
                enc_attn_levels=_attn_levels(state, "encoder.down"), dec_attn_levels=_attn_levels(state, "decoder.up"))


def _attn_levels(state: dict[str, torch.Tensor], stack: str) -> tuple[int, ...] | None:
    """Levels of an LDM encoder/decoder with attention blocks (None when there are none)."""
    levels = tuple(i for i in range(count_indexed(state, f"{stack}.")) if f"{stack}.{i}.attn.0.q.weight" in state)
    return levels or None


def read_ldm_state(path: Path) -> dict[str, torch.Tensor]:
    """The VAE's LDM-named tensors of a standalone or full-SD checkpoint."""
    state = state_dict_of(read_any(path), path, ("state_dict", "model"))
    if any(k.startswith(SD_PREFIX) for k in state):
        return {k[len(SD_PREFIX):]: v for k, v in state.items() if k.startswith(SD_PREFIX)}
    return drop(state, prefixes=("model_ema.", "loss."))


def read_diffusers(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    config = read_json(folder / "config.json")
    weights = next((folder / n for n in DIFFUSERS_WEIGHTS if (folder / n).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{folder}: no {' or '.join(DIFFUSERS_WEIGHTS)}")
    state = state_dict_of(read_any(weights), weights, ())
    renamed = {}
    for key, value in state.items():
        if ".attentions." in key:
            for old, new in LEGACY_ATTN.items():
                key = key.replace(old, new)
        renamed[key] = value
    return options_from_diffusers_config(config, folder / "config.json"), renamed


def build(release: Release, weights: Path | None, **overrides: Any) -> VAETokenizer:
    base = RELEASES[release.name]
    if weights is None:
        return VAETokenizer(**resolve_options(release.name, base, {}, overrides))
    if weights.is_dir() and (weights / "model_index.json").is_file():
        weights = weights / "vae"  # a whole diffusers pipeline: its VAE sits in vae/
    if weights.is_dir():
        from_file, state = read_diffusers(weights)
        style = "diffusers"
    else:
        state, style = read_ldm_state(weights), "ldm"
        try:
            from_file = options_from_ldm_state(state)
        except (KeyError, IndexError):
            from_file = {}
    options = resolve_options(release.name, base, from_file, overrides, source=str(weights))
    model = VAETokenizer(**options)
    km = autoencoder_keymap(style, options["ch"], tuple(options["ch_mult"]), options["num_res_blocks"],
                            attn_levels=options.get("enc_attn_levels"), dec_attn_levels=options.get("dec_attn_levels") or ())
    source = f"{weights} (as {release.name})"
    load_converted(model, km.apply(state, source), source)
    return model.eval()


def recognizes(path: Path) -> bool:
    if path.is_dir():
        config = path / ("vae/config.json" if (path / "model_index.json").is_file() else "config.json")
        return config.is_file() and read_json(config).get("_class_name") == "AutoencoderKL"
    if path.suffix not in (".pt", ".pth", ".ckpt", ".safetensors"):
        return False
    keys = file_keys(path)
    return any(k.endswith(("encoder.mid.attn_1.q.weight")) for k in keys) and any("post_quant_conv" in k for k in keys) \
        and not any("quantize." in k for k in keys)


_SD_WHERE = "huggingface.co/stabilityai/sd-vae-ft-mse(-original), CompVis/stable-diffusion-v1-4 (vae/)"
build_kl_f8 = public_factory(
    Release("sd-vae-kl-f8", "vae", "diffusers vae/ folder, or a full SD-1.x .ckpt (first_stage_model.)",
            _SD_WHERE, PREPROCESSING_SD), build, recognizes)
# The fine-tuned decoder of the same architecture: its files are recognised as sd-vae-kl-f8.
build_ft_mse = public_factory(
    Release("sd-vae-ft-mse", "vae", "vae-ft-mse-840000-ema-pruned.ckpt/.safetensors, or the diffusers folder",
            _SD_WHERE, PREPROCESSING_SD), build, None)
# MAR's kl16.ckpt has an LDM VAE's layout: recognising it from its keys would collide with
# SD's files, so it is loaded by name.
build_mar_kl16 = public_factory(
    Release("mar-kl16", "vae", "kl16.ckpt ({'model': state_dict})", "github.com/LTH14/mar (its README's download link)",
            PREPROCESSING_MAR), build, None)
