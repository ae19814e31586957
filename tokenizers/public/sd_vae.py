"""The LDM KL-VAEs -> ``vae``: Stable Diffusion 1.x/2.x, SDXL, SD3/SD3.5, FLUX.1, MAR's KL-16,
VA-VAE (LightningDiT) and REPA-E's end-to-end tuned E2E-VAEs.

One architecture (SD3's and FLUX.1's without the 1x1 quant convs, 16 latent channels);
three released forms:

* a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``/``.bin``; or a
  whole pipeline folder, whose ``vae/`` is used),
  diffusers naming (``down_blocks``, ``mid_block.attentions.0.to_q`` as Linear, or the
  older ``query/key/value/proj_attn``); sizes from ``config.json``;
* a standalone LDM ``.ckpt``/``.safetensors`` (``vae-ft-mse-840000-ema-pruned.ckpt``):
  LDM naming, plus ``model_ema.*``/``loss.*`` entries that are ignored;
* a full SD-1.x ``.ckpt``: the VAE under ``first_stage_model.``, the rest ignored;
* VA-VAE's Lightning ``.pt`` (``state_dict``; its ``loss.*``, DINOv2 ``foundation_model.*`` and
  ``linear_proj.*`` ignored) and REPA-E's bare state dicts: LDM naming.

LDM files (and FLUX.1's own ``ae.safetensors``) carry no config: sizes are read off the
tensors, quant convs are used when the file has them. 16-bit files (SD3's fp16, FLUX.1's
bf16 ``vae/``) are upcast to float32. Latents are the posterior mean, neither shifted nor
scaled into a diffusion model's space (the release's shift/scale are recorded in
``tokenizer.upstream``). A diffusers folder is recognised as SD/SDXL/SD3/FLUX.1 by its
config's scaling and shift factors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tokbench.checkpoint import CheckpointError
from tokbench.tokenizers.public.conv_keys import autoencoder_keymap, count_indexed, encoder_sizes
from tokbench.tokenizers.public.keymap import load_converted
from tokbench.tokenizers.public.release import (Release, drop, file_keys, public_factory, read_any, read_json,
                                                resolve_options, state_dict_of, options_read_off)
from tokbench.tokenizers.vae import VAETokenizer

SD_PREFIX = "first_stage_model."
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
LEGACY_ATTN = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}
PREPROCESSING_SD = "none fixed by the release (SD trains at 256/512 px, random crops); inputs 2x - 1"
PREPROCESSING_ADM = "ADM center crop to 256 (as LlamaGen); then 2x - 1"
PREPROCESSING_LATENT = "none fixed by the release (the diffusion model's training resolutions); inputs 2x - 1"
_F8C4 = dict(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, latent_channels=4)
_F16D32 = dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, latent_channels=32, enc_attn_levels=(4,),
               dec_attn_levels=(4,))
_F8C16 = dict(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, latent_channels=16, use_quant_conv=False)
RELEASES = {
    "sd-vae-kl-f8": _F8C4,
    "sd-vae-ft-mse": _F8C4,
    "sdxl-vae": _F8C4,
    "sd3-vae": _F8C16,
    "flux1-vae": _F8C16,
    "flux1-ae": _F8C16,
    # MAR's encoder keeps LDM's default attention at 16 px (its lowest level); its decoder has none.
    "mar-kl16": dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, latent_channels=16, enc_attn_levels=(4,)),
    # VA-VAE and REPA-E's f16d32 keep that attention on both sides (LightningDiT/REPA-E AutoencoderKL).
    "va-vae-f16d32": _F16D32,
    "e2e-vavae": _F16D32,
    "e2e-invae": _F16D32,
    "e2e-sdvae": _F8C4,  # REPA-E's f8d4: SD's architecture
}


def options_from_diffusers_config(config: dict[str, Any], path: Path) -> dict[str, Any]:
    try:
        boc = [int(c) for c in config["block_out_channels"]]
        blocks = set(config.get("down_block_types", [])) | set(config.get("up_block_types", []))
        if not blocks <= {"DownEncoderBlock2D", "UpDecoderBlock2D"}:
            raise CheckpointError(f"{path}: block types {sorted(blocks)} not supported (attention only in the middle)")
        quant, post_quant = bool(config.get("use_quant_conv", True)), bool(config.get("use_post_quant_conv", True))
        if quant != post_quant:
            raise CheckpointError(f"{path}: use_quant_conv={quant} with use_post_quant_conv={post_quant} is not "
                                  "supported (both or neither)")
        if not config.get("mid_block_add_attention", True):
            raise CheckpointError(f"{path}: variants without mid-block attention are not supported")
        return dict(ch=boc[0], ch_mult=tuple(c // boc[0] for c in boc), num_res_blocks=int(config["layers_per_block"]),
                    latent_channels=int(config["latent_channels"]), use_quant_conv=quant)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: not a diffusers AutoencoderKL config ({err})") from err


def options_from_ldm_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    if any(k.startswith("quantize.") for k in state):
        raise KeyError("not an LDM KL autoencoder")  # e.g. a VQ model's file: the key check says what differs
    sizes = encoder_sizes(state)
    z_channels = state["decoder.conv_in.weight"].shape[1]
    use_quant_conv = "quant_conv.weight" in state  # FLUX.1's ae.safetensors has none
    embed_dim = state["quant_conv.weight"].shape[0] // 2 if use_quant_conv else z_channels
    if z_channels != embed_dim:
        raise CheckpointError(f"z_channels {z_channels} != embed_dim {embed_dim}: not supported by the vae family")
    return dict(sizes, use_quant_conv=use_quant_conv, latent_channels=embed_dim,
                enc_attn_levels=_attn_levels(state, "encoder.down"), dec_attn_levels=_attn_levels(state, "decoder.up"))


def _attn_levels(state: dict[str, torch.Tensor], stack: str) -> tuple[int, ...] | None:
    """Levels of an LDM encoder/decoder with attention blocks (None when there are none)."""
    levels = tuple(i for i in range(count_indexed(state, f"{stack}.")) if f"{stack}.{i}.attn.0.q.weight" in state)
    return levels or None


def read_ldm_state(path: Path) -> dict[str, torch.Tensor]:
    """The VAE's LDM-named tensors of a standalone or full-SD checkpoint."""
    state = state_dict_of(read_any(path), path, ("state_dict", "model"))
    if any(k.startswith(SD_PREFIX) for k in state):
        return as_float32({k[len(SD_PREFIX):]: v for k, v in state.items() if k.startswith(SD_PREFIX)})
    # VA-VAE's Lightning checkpoint also holds its training-only DINOv2 and the projection onto it.
    return as_float32(drop(state, prefixes=("model_ema.", "loss.", "foundation_model.", "linear_proj.")))


def as_float32(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """16-bit releases upcast: tokbench computes in float32 on the 16-bit-rounded weights, as
    diffusers' ``from_pretrained(torch_dtype=float32)`` does."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


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
    return options_from_diffusers_config(config, folder / "config.json"), as_float32(renamed)


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
        from_file = options_read_off(options_from_ldm_state, state)
    options = resolve_options(release.name, base, from_file, overrides, source=str(weights))
    model = VAETokenizer(**options)
    km = autoencoder_keymap(style, options["ch"], tuple(options["ch_mult"]), options["num_res_blocks"],
                            attn_levels=options.get("enc_attn_levels"), dec_attn_levels=options.get("dec_attn_levels") or (),
                            quant_convs=options.get("use_quant_conv", True))
    source = f"{weights} (as {release.name})"
    load_converted(model, km.apply(state, source), source)
    return model.eval()


# A diffusers AutoencoderKL folder names its release by these config constants.
DIFFUSERS_SIGNATURES = {"flux1-vae": ("shift_factor", 0.1159), "sd3-vae": ("shift_factor", 0.0609),
                        "sdxl-vae": ("scaling_factor", 0.13025)}


def diffusers_release(config: dict[str, Any]) -> str:
    """The public name of a diffusers AutoencoderKL config (SD-1.x/2.x when no signature matches)."""
    for name, (key, value) in DIFFUSERS_SIGNATURES.items():
        if isinstance(config.get(key), (int, float)) and abs(config[key] - value) < 1e-6:
            return name
    return "sd-vae-kl-f8"


# Bare f16d32 files with attention in the decoder's levels: one architecture, three releases.
F16D32_NAMES = ("va-vae-f16d32", "e2e-vavae", "e2e-invae")


def ldm_releases(keys: frozenset[str]) -> tuple[str, ...]:
    """The public names an LDM VAE file fits: ``va-vae-f16d32`` for VA-VAE's Lightning checkpoint
    (its DINOv2 projection ``linear_proj``); VA-VAE and REPA-E's E2E-VAEs for a bare file with
    attention in the decoder's levels (the caller names which); ``sd-vae-kl-f8`` for the others
    with quant convs, ``flux1-ae`` without; none for anything else. MAR's file is loaded by name."""
    if not any(k.endswith("encoder.mid.attn_1.q.weight") for k in keys) or any(
            "quantize." in k or "quantizer." in k for k in keys):  # VQ files (taming's, RQ-VAE's) are no VAE
        return ()
    if any(k.endswith("linear_proj.weight") for k in keys):
        return ("va-vae-f16d32",)
    if not any("post_quant_conv" in k for k in keys):
        return ("flux1-ae",)
    if any("decoder.up." in k and ".attn." in k for k in keys):
        return F16D32_NAMES
    return ("sd-vae-kl-f8",)


def recognizer(name: str):
    """``recognizes(path)`` for one public name."""

    def recognizes(path: Path) -> bool:
        if path.is_dir():
            config = path / ("vae/config.json" if (path / "model_index.json").is_file() else "config.json")
            if not config.is_file():
                return False
            blob = read_json(config)
            return blob.get("_class_name") == "AutoencoderKL" and diffusers_release(blob) == name
        if path.suffix not in (".pt", ".pth", ".ckpt", ".safetensors"):
            return False
        return name in ldm_releases(file_keys(path))

    return recognizes


_SD_WHERE = "huggingface.co/stabilityai/sd-vae-ft-mse(-original), CompVis/stable-diffusion-v1-4 (vae/)"
build_kl_f8 = public_factory(
    Release("sd-vae-kl-f8", "vae", "diffusers vae/ folder, or a full SD-1.x .ckpt (first_stage_model.)",
            _SD_WHERE, PREPROCESSING_SD, latent_scale=0.18215), build, recognizer("sd-vae-kl-f8"))
# The fine-tuned decoder of the same architecture: its files are recognised as sd-vae-kl-f8.
build_ft_mse = public_factory(
    Release("sd-vae-ft-mse", "vae", "vae-ft-mse-840000-ema-pruned.ckpt/.safetensors, or the diffusers folder",
            _SD_WHERE, PREPROCESSING_SD, latent_scale=0.18215), build, None)
# MAR's kl16.ckpt has an LDM VAE's layout: recognising it from its keys would collide with
# SD's files, so it is loaded by name.
build_mar_kl16 = public_factory(
    Release("mar-kl16", "vae", "kl16.ckpt ({'model': state_dict})", "github.com/LTH14/mar (its README's download link)",
            PREPROCESSING_ADM, latent_scale=0.2325), build, None)  # MAR's engine_mar.py: posterior.sample() * 0.2325
build_sdxl = public_factory(
    Release("sdxl-vae", "vae", "vae/ folder (config.json + diffusion_pytorch_model.safetensors, float32)",
            "huggingface.co/stabilityai/sdxl-vae (= stable-diffusion-xl-base-1.0 vae/)", PREPROCESSING_LATENT,
            latent_scale=0.13025), build, recognizer("sdxl-vae"))
build_sd3 = public_factory(
    Release("sd3-vae", "vae", "vae/ folder (config.json + diffusion_pytorch_model.safetensors, float16)",
            "huggingface.co/stabilityai/stable-diffusion-3-medium-diffusers vae/ (SD3.5 ships the same VAE)",
            PREPROCESSING_LATENT, latent_shift=0.0609, latent_scale=1.5305), build, recognizer("sd3-vae"))
build_flux1_vae = public_factory(
    Release("flux1-vae", "vae", "vae/ folder (config.json + diffusion_pytorch_model.safetensors, bfloat16)",
            "huggingface.co/black-forest-labs/FLUX.1-dev (or -schnell) vae/", PREPROCESSING_LATENT,
            latent_shift=0.1159, latent_scale=0.3611), build, recognizer("flux1-vae"))
# BFL's own file: LDM names, no config, no quant convs. Its first release sampled the posterior
# inside encode(); a tokenizer's latents are the mean.
build_flux1_ae = public_factory(
    Release("flux1-ae", "vae", "ae.safetensors (float32, LDM key names, no config)",
            "huggingface.co/black-forest-labs/FLUX.1-dev (or -schnell) ae.safetensors; github.com/black-forest-labs/flux",
            PREPROCESSING_LATENT, latent_shift=0.1159, latent_scale=0.3611), build, recognizer("flux1-ae"))
# VA-VAE (LightningDiT): an LDM AutoencoderKL, f16, 32 channels, trained aligned to DINOv2.
PREPROCESSING_VA_VAE = ("ImageNet val: torchvision Resize(256) then CenterCrop(256) (LightningDiT's "
                        "evaluate_tokenizer.py); then 2x - 1")
build_va_vae = public_factory(
    Release("va-vae-f16d32", "vae", "vavae-imagenet256-f16d32-dinov2.pt (a Lightning state_dict, or the bare one)",
            "huggingface.co/hustvl/vavae-imagenet256-f16d32-dinov2; github.com/hustvl/LightningDiT",
            PREPROCESSING_VA_VAE), build, recognizer("va-vae-f16d32"))
# REPA-E's end-to-end tuned VAEs: bare state dicts of its AutoencoderKL (save_vae_weights.py),
# the same LDM names; per-channel latent statistics ship apart (*-latents-stats.pt). Its
# images are ADM-centre-cropped (preprocessing.py).
_REPA_E = "huggingface.co/REPA-E/{0}; github.com/End2End-Diffusion/REPA-E"
build_e2e_vavae = public_factory(
    Release("e2e-vavae", "vae", "e2e-vavae-400k.pt (bare state dict)", _REPA_E.format("e2e-vavae"),
            PREPROCESSING_ADM), build, recognizer("e2e-vavae"))
build_e2e_invae = public_factory(
    Release("e2e-invae", "vae", "the .pt of REPA-E/e2e-invae (bare state dict)", _REPA_E.format("e2e-invae"),
            PREPROCESSING_ADM), build, recognizer("e2e-invae"))
# Its file has SD's VAE layout and is recognised as sd-vae-kl-f8: load it by this name. REPA-E's
# f8d4 (vae_models["f8d4"]) is SD's VAE; the file name is the one its users' scripts load.
build_e2e_sdvae = public_factory(
    Release("e2e-sdvae", "vae", "e2e-sdvae-400k.pt (bare state dict)", _REPA_E.format("e2e-sdvae"),
            PREPROCESSING_ADM), build, None)
