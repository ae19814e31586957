"""DC-AE (MIT HAN lab; SANA's autoencoder) from its diffusers ``AutoencoderDC`` folder -> ``dc_ae``.

Released as ``config.json`` + ``diffusion_pytorch_model.safetensors`` (``mit-han-lab/dc-ae-*-diffusers``,
and SANA pipelines' ``vae/``). Sizes come from ``config.json``. Latents are the encoder's
output as is (deterministic), not multiplied by the config's ``scaling_factor``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tokbench.checkpoint import CheckpointError
from tokbench.tokenizers.public.dc_ae_model import DCAETokenizer
from tokbench.tokenizers.public.keymap import KeyMap, as_conv1x1, concat_rows, load_converted
from tokbench.tokenizers.public.release import Release, public_factory, read_any, read_json, resolve_options, state_dict_of
from tokbench.tokenizers.public.sd_vae import DIFFUSERS_WEIGHTS, as_float32

CONFIG_KEYS = (
    "latent_channels", "attention_head_dim", "encoder_block_types", "decoder_block_types",
    "encoder_block_out_channels", "decoder_block_out_channels", "encoder_layers_per_block",
    "decoder_layers_per_block", "encoder_qkv_multiscales", "decoder_qkv_multiscales", "upsample_block_type",
    "downsample_block_type", "decoder_norm_types", "decoder_act_fns", "encoder_out_shortcut",
    "decoder_in_shortcut", "decoder_conv_act_fn",
)
PREPROCESSING = "none fixed by the release (SANA trains at 512-4096 px); inputs 2x - 1"
RELEASES: dict[str, dict[str, Any]] = {
    # mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers (SANA 1.0's vae/): the dc_ae family's defaults.
    "dc-ae-f32c32": {},
}

# tokbench name -> diffusers name, applied in order to each tokbench key.
_RENAMES = [
    (r"^encoder\.stages\.", "encoder.down_blocks."), (r"^decoder\.stages\.", "decoder.up_blocks."),
    (r"\.attn\.scales\.(\d+)\.depthwise\.", r".attn.to_qkv_multiscale.\1.proj_in."),
    (r"\.attn\.scales\.(\d+)\.grouped\.", r".attn.to_qkv_multiscale.\1.proj_out."),
    (r"\.attn\.proj\.", ".attn.to_out."), (r"\.attn\.norm\.", ".attn.norm_out."),
    (r"\.mlp\.expand\.", ".conv_out.conv_inverted."), (r"\.mlp\.depthwise\.", ".conv_out.conv_depth."),
    (r"\.mlp\.project\.", ".conv_out.conv_point."), (r"\.mlp\.norm\.", ".conv_out.norm."),
]


def diffusers_name(key: str) -> str:
    for pattern, repl in _RENAMES:
        key = re.sub(pattern, repl, key)
    return key


def keymap_for(model: DCAETokenizer) -> KeyMap:
    """The diffusers ``AutoencoderDC`` names of every tensor of ``model`` (q, k, v Linears fused
    into one 1x1 conv; the attention's output Linear as a 1x1 conv)."""
    km = KeyMap()
    for key in model.state_dict():
        src = diffusers_name(key)
        if key.endswith(".attn.qkv.weight"):
            stem = src[: -len("qkv.weight")]
            km.concat(key, [f"{stem}to_{p}.weight" for p in "qkv"], lambda *ts: concat_rows(*map(as_conv1x1, ts)))
        elif key.endswith(".attn.proj.weight"):
            km.rename(key, src, as_conv1x1)
        else:
            km.rename(key, src)
    return km


def options_from_config(config: dict[str, Any], path: Path) -> dict[str, Any]:
    if config.get("_class_name") != "AutoencoderDC":
        raise CheckpointError(f"{path}: _class_name {config.get('_class_name')!r}, expected 'AutoencoderDC'")
    if config.get("in_channels", 3) != 3:
        raise CheckpointError(f"{path}: in_channels {config['in_channels']} (only RGB, 3, is supported)")
    return {k: config[k] for k in CONFIG_KEYS if k in config}


def build(release: Release, weights: Path | None, **overrides: Any) -> DCAETokenizer:
    base = RELEASES[release.name]
    if weights is None:
        return DCAETokenizer(**resolve_options(release.name, base, {}, overrides))
    if weights.is_dir() and (weights / "model_index.json").is_file():
        weights = weights / "vae"  # a whole SANA pipeline: its autoencoder sits in vae/
    if not weights.is_dir():
        raise CheckpointError(f"{weights}: expected the diffusers folder (config.json + {DIFFUSERS_WEIGHTS[0]})")
    from_file = options_from_config(read_json(weights / "config.json"), weights / "config.json")
    file = next((weights / n for n in DIFFUSERS_WEIGHTS if (weights / n).is_file()), None)
    if file is None:
        raise CheckpointError(f"{weights}: no {' or '.join(DIFFUSERS_WEIGHTS)}")
    options = resolve_options(release.name, base, from_file, overrides, source=str(weights))
    try:
        model = DCAETokenizer(**options)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{weights}/config.json: {err}") from err
    source = f"{weights} (as {release.name})"
    state = as_float32(state_dict_of(read_any(file), file, ()))
    load_converted(model, keymap_for(model).apply(state, source), source)
    return model.eval()


def recognizes(path: Path) -> bool:
    if not path.is_dir():
        return False
    config = path / ("vae/config.json" if (path / "model_index.json").is_file() else "config.json")
    return config.is_file() and read_json(config).get("_class_name") == "AutoencoderDC"


def build_dc_ae_family(**options: Any) -> DCAETokenizer:
    """The ``dc_ae`` family: rebuilds a DC-AE from a tokbench checkpoint's config."""
    return DCAETokenizer(**options)


build_f32c32 = public_factory(
    Release("dc-ae-f32c32", "dc_ae", "diffusers folder: config.json + diffusion_pytorch_model.safetensors",
            "huggingface.co/mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers (= SANA 1.0's vae/)", PREPROCESSING,
            latent_scale=0.41407), build, recognizes)
