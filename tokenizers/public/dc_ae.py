"""DC-AE (MIT HAN lab; SANA's autoencoder) from its diffusers ``AutoencoderDC`` folder -> ``dc_ae``.

Released as ``config.json`` + ``diffusion_pytorch_model.safetensors`` (``mit-han-lab/dc-ae-*-diffusers``,
and SANA pipelines' ``vae/``): SANA's f32c32 and the ImageNet f64c128 / f128c512, one code for all.
Sizes come from ``config.json``. Latents are the encoder's
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
# mit-han-lab/efficientvit applications/dc_ae/README.md: DMCrop(512), then Normalize(0.5, 0.5).
PREPROCESSING_IN = "ImageNet 512: DMCrop(512) (ADM's centre crop), then (x - 0.5) / 0.5"


def _in_1_0(widths: list[int], latent_channels: int) -> dict[str, Any]:
    """A DC-AE ``-in-1.0`` release config, as diffusers' ``scripts/convert_dcae_to_diffusers.py``
    (``get_ae_config``, commit f7c4706) passes it to ``AutoencoderDC`` to write the released
    ``config.json``: stage 0 empty (the input/output convs resample), ResBlocks in stages 1-2,
    EfficientViT blocks from stage 3 without multi-scale aggregation, BatchNorm + ReLU in the
    decoder's ResBlock stages. The options the script leaves out take ``AutoencoderDC``'s
    defaults, which the released ``config.json`` records (mit-han-lab/dc-ae-f128c512-in-1.0-diffusers
    at 91f26ad: ``"downsample_block_type": "pixel_unshuffle"``, ``"attention_head_dim": 32``)."""
    n = len(widths)
    return dict(
        latent_channels=latent_channels,
        encoder_block_types=["ResBlock"] * 3 + ["EfficientViTBlock"] * (n - 3),
        decoder_block_types=["ResBlock"] * 3 + ["EfficientViTBlock"] * (n - 3),
        encoder_block_out_channels=widths, decoder_block_out_channels=widths,
        encoder_layers_per_block=[0, 4, 8] + [2] * (n - 3), decoder_layers_per_block=[0, 5, 10] + [2] * (n - 3),
        encoder_qkv_multiscales=[[]] * n, decoder_qkv_multiscales=[[]] * n,
        decoder_norm_types=["batch_norm"] * 3 + ["rms_norm"] * (n - 3),
        decoder_act_fns=["relu"] * 3 + ["silu"] * (n - 3),
        # AutoencoderDC's defaults (diffusers' autoencoder_dc.py), not set by the script:
        attention_head_dim=32, upsample_block_type="pixel_shuffle", downsample_block_type="pixel_unshuffle",
        encoder_out_shortcut=True, decoder_in_shortcut=True, decoder_conv_act_fn="relu",
    )


RELEASES: dict[str, dict[str, Any]] = {
    # mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers (SANA 1.0's vae/): the dc_ae family's defaults.
    "dc-ae-f32c32": {},
    # mit-han-lab/dc-ae-f64c128-in-1.0-diffusers: 7 stages (f64), 128 latent channels.
    "dc-ae-f64c128": _in_1_0([128, 256, 512, 512, 1024, 1024, 2048], 128),
    # mit-han-lab/dc-ae-f128c512-in-1.0-diffusers: 8 stages (f128), 512 latent channels.
    "dc-ae-f128c512": _in_1_0([128, 256, 512, 512, 1024, 1024, 2048, 2048], 512),
}
# The releases' scaling_factor, from the same get_ae_config (recorded, never applied).
SCALING_FACTORS = {"dc-ae-f32c32": 0.41407, "dc-ae-f64c128": 0.2889, "dc-ae-f128c512": 0.4883}

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


def release_of(config: dict[str, Any]) -> str:
    """The public name of an ``AutoencoderDC`` config by its spatial compression (one stage per
    factor 2): f64 and f128 are ``dc-ae-f64c128`` and ``dc-ae-f128c512``, every other config
    (SANA's and the f32c32 ImageNet ones) ``dc-ae-f32c32``. The sizes always come from the config."""
    stride = 2 ** (len(config.get("encoder_block_out_channels", ())) - 1)
    return {64: "dc-ae-f64c128", 128: "dc-ae-f128c512"}.get(stride, "dc-ae-f32c32")


def recognizer(name: str):
    """``recognizes(path)`` for one public name: a diffusers ``AutoencoderDC`` folder (or a
    pipeline with one in ``vae/``) whose config is that release's."""

    def recognizes(path: Path) -> bool:
        if not path.is_dir():
            return False
        config = path / ("vae/config.json" if (path / "model_index.json").is_file() else "config.json")
        if not config.is_file():
            return False
        blob = read_json(config)
        return blob.get("_class_name") == "AutoencoderDC" and release_of(blob) == name

    return recognizes


def build_dc_ae_family(**options: Any) -> DCAETokenizer:
    """The ``dc_ae`` family: rebuilds a DC-AE from a tokbench checkpoint's config."""
    return DCAETokenizer(**options)


_FOLDER = "diffusers folder: config.json + diffusion_pytorch_model.safetensors"
build_f32c32 = public_factory(
    Release("dc-ae-f32c32", "dc_ae", _FOLDER,
            "huggingface.co/mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers (= SANA 1.0's vae/)", PREPROCESSING,
            latent_scale=SCALING_FACTORS["dc-ae-f32c32"]), build, recognizer("dc-ae-f32c32"))
build_f64c128 = public_factory(
    Release("dc-ae-f64c128", "dc_ae", _FOLDER + " (float32, 2.71 GB)",
            "huggingface.co/mit-han-lab/dc-ae-f64c128-in-1.0-diffusers; github.com/mit-han-lab/efficientvit",
            PREPROCESSING_IN, latent_scale=SCALING_FACTORS["dc-ae-f64c128"]), build, recognizer("dc-ae-f64c128"))
build_f128c512 = public_factory(
    Release("dc-ae-f128c512", "dc_ae", _FOLDER + " (float32, 4.48 GB)",
            "huggingface.co/mit-han-lab/dc-ae-f128c512-in-1.0-diffusers; github.com/mit-han-lab/efficientvit",
            PREPROCESSING_IN, latent_scale=SCALING_FACTORS["dc-ae-f128c512"]), build, recognizer("dc-ae-f128c512"))
