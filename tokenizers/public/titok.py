"""TiTok releases (``yucornetto/tokenizer_titok_*_imagenet``) -> `TiTokTokenizer`.

A release is a Hugging Face folder: ``config.json`` (the whole OmegaConf training config,
``model.vq_model.*`` and ``dataset.preprocessing.crop_size``) + ``model.safetensors``.
Three kinds: two-stage VQ (``l32``/``b64``/``s128``: the ViT tokenizer plus the MaskGIT
pixel decoder and its 1024-code proxy codebook), single-stage VQ with 8192 plain codes
(``bl64``/``bl128``/``sl256_vq8k``: the ViT decoder outputs pixels), and single-stage VAE
(``*_vae_c16``: 16 continuous channels per token). The ViT sizes are named in the config
(``small``/``base``/``large``); the pixel decoder's sizes are not, and are read off the tensors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tokbench.checkpoint import CheckpointError
from tokbench.tokenizers.public.conv_keys import count_indexed
from tokbench.tokenizers.public.keymap import KeyMap, load_converted
from tokbench.tokenizers.public.release import (Release, options_read_off, public_factory, read_any, read_json,
                                                refuse_fixed_overrides, resolve_options)
from tokbench.tokenizers.public.titok_model import QUANTIZE_MODES, TiTokTokenizer

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
OWN_BUFFERS = ("quantize.step", "quantize.last_hit_step", "quantize.last_restart_step", "quantize.hit_ema")
# Upstream's named ViT sizes: (width, depth, heads). "tiny" is the reduced size of the
# adapter test fixtures (upstream's table patched in memory, see the fixture READMEs).
VIT_SIZES = {"small": (512, 8, 8), "base": (768, 12, 12), "large": (1024, 24, 16), "tiny": (64, 2, 2)}
PREPROCESSING = "shorter side resized to 256 (bicubic, antialias), center crop 256x256; [0, 1] as is"
_TWO_STAGE = dict(image_size=256, patch_size=16, codebook_size=4096, code_dim=12, legacy=True, two_stage=True,
                  quantize_mode="vq", l2_norm=True, num_proxy_codes=1024, pixel_ch=128,
                  pixel_ch_mult=(1, 1, 2, 2, 4), pixel_num_res_blocks=2, pixel_z_channels=256)
_SINGLE_STAGE_VQ = dict(image_size=256, patch_size=16, codebook_size=8192, code_dim=64, legacy=False,
                        two_stage=False, quantize_mode="vq", l2_norm=False)
_SINGLE_STAGE_VAE = dict(image_size=256, patch_size=16, code_dim=16, legacy=False, two_stage=False,
                         quantize_mode="vae")


def _vit(size: str, prefix: str) -> dict[str, Any]:
    width, depth, heads = VIT_SIZES[size]
    return {f"{prefix}width": width, f"{prefix}depth": depth, f"{prefix}heads": heads}


def _sizes(enc: str, dec: str) -> dict[str, Any]:
    return {**_vit(enc, ""), **_vit(dec, "dec_")}


RELEASES = {
    "titok-l32": dict(_TWO_STAGE, num_tokens=32, **_sizes("large", "large")),
    "titok-b64": dict(_TWO_STAGE, num_tokens=64, **_sizes("base", "base")),
    "titok-s128": dict(_TWO_STAGE, num_tokens=128, **_sizes("small", "small")),
    "titok-bl64-vq8k": dict(_SINGLE_STAGE_VQ, num_tokens=64, **_sizes("base", "large")),
    "titok-bl128-vq8k": dict(_SINGLE_STAGE_VQ, num_tokens=128, **_sizes("base", "large")),
    "titok-sl256-vq8k": dict(_SINGLE_STAGE_VQ, num_tokens=256, **_sizes("small", "large")),
    "titok-bl64-vae-c16": dict(_SINGLE_STAGE_VAE, num_tokens=64, **_sizes("base", "large")),
    "titok-bl128-vae-c16": dict(_SINGLE_STAGE_VAE, num_tokens=128, **_sizes("base", "large")),
    "titok-ll32-vae-c16": dict(_SINGLE_STAGE_VAE, num_tokens=32, **_sizes("large", "large")),
}
FIXED = ("num_tokens", "codebook_size", "code_dim", "patch_size", "width", "depth", "heads", "dec_width",
         "dec_depth", "dec_heads", "legacy", "two_stage", "quantize_mode", "l2_norm", "num_proxy_codes")


def options_from_config(config: dict[str, Any], path: Path) -> dict[str, Any]:
    """Options from a release's ``config.json``."""
    try:
        vq = config["model"]["vq_model"]
        mode = vq.get("quantize_mode", "vq")
        two_stage, legacy = bool(vq.get("finetune_decoder", True)), bool(vq.get("is_legacy", True))
        if mode not in QUANTIZE_MODES:
            raise CheckpointError(f"{path}: unknown quantize_mode {mode!r}; known: {', '.join(QUANTIZE_MODES)}")
        if two_stage != legacy:
            # Upstream's decoder head follows is_legacy: proxy-code logits (what the two-stage pixel
            # decoder reads) or pixels (single-stage). Other pairings are stage-1 training states.
            raise CheckpointError(f"{path}: finetune_decoder={two_stage} with is_legacy={legacy} is not a released "
                                  "TiTok (two-stage releases are legacy, single-stage ones are not)")
        if two_stage and (mode != "vq" or not vq["use_l2_norm"]):
            raise CheckpointError(f"{path}: a two-stage TiTok release quantizes with quantize_mode vq and use_l2_norm")
        if vq["vit_enc_patch_size"] != vq["vit_dec_patch_size"]:
            raise CheckpointError(f"{path}: encoder and decoder patch sizes differ")
        for key in ("vit_enc_model_size", "vit_dec_model_size"):
            if vq[key] not in VIT_SIZES:
                raise CheckpointError(f"{path}: unknown ViT size {vq[key]!r}; known: {', '.join(VIT_SIZES)}")
        options = dict(image_size=int(config["dataset"]["preprocessing"]["crop_size"]),
                       patch_size=int(vq["vit_enc_patch_size"]), num_tokens=int(vq["num_latent_tokens"]),
                       code_dim=int(vq["token_size"]), legacy=legacy, two_stage=two_stage, quantize_mode=mode,
                       **_sizes(vq["vit_enc_model_size"], vq["vit_dec_model_size"]))
        if mode == "vq":
            options.update(codebook_size=int(vq["codebook_size"]), l2_norm=bool(vq["use_l2_norm"]))
        return options
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: not a TiTok config.json ({type(err).__name__}: {err})") from err


def options_from_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The pixel decoder's sizes, read off its tensors (the release's config does not hold them)."""
    levels = count_indexed(state, "pixel_decoder.up.")
    outs = [state[f"pixel_decoder.up.{i}.block.0.conv1.weight"].shape[0] for i in range(levels)]
    num_proxy, z_channels = state["pixel_quantize.embedding.weight"].shape
    return dict(pixel_ch=outs[0], pixel_ch_mult=tuple(o // outs[0] for o in outs),
                pixel_num_res_blocks=count_indexed(state, "pixel_decoder.mid."), pixel_z_channels=z_channels,
                num_proxy_codes=num_proxy)


def keymap_for(model: TiTokTokenizer) -> KeyMap:
    """Identity for every tensor but the codebook (``quantize.embedding.weight`` upstream)."""
    km = KeyMap()
    for key in model.state_dict():
        if key.startswith("quantize."):
            continue
        km.rename(key, key)
    if model.kind == "discrete":
        km.rename("quantize.embedding", "quantize.embedding.weight")
    return km


def find_files(weights: Path) -> tuple[Path, Path]:
    folder = weights if weights.is_dir() else weights.parent
    config = folder / "config.json"
    tensors = weights if weights.is_file() else next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if tensors is None or not config.is_file():
        raise CheckpointError(f"{weights}: a TiTok release is a folder with config.json and {' or '.join(WEIGHT_FILES)}")
    return config, tensors


def build(release: Release, weights: Path | None, **overrides: Any) -> TiTokTokenizer:
    base = RELEASES[release.name]
    refuse_fixed_overrides(release, base, overrides)
    if weights is None:
        return TiTokTokenizer(**resolve_options(release.name, base, {}, overrides))
    config_path, tensors = find_files(weights)
    state = read_any(tensors)
    from_file = options_from_config(read_json(config_path), config_path)
    if _kind(from_file) != _kind(base):
        raise CheckpointError(f"{weights}: a {_describe(from_file)} TiTok, not {release.name} "
                              f"({_describe(base)}); load it as one of {', '.join(_names_of_kind(from_file))}")
    if from_file["two_stage"]:
        from_file.update(options_read_off(options_from_state, state))
    model = TiTokTokenizer(**resolve_options(release.name, base, from_file, overrides, source=str(weights)))
    source = f"{tensors} (as {release.name})"
    load_converted(model, keymap_for(model).apply(state, source), source, OWN_BUFFERS)
    return model.eval()


def _kind(options: dict[str, Any]) -> tuple[bool, str]:
    return bool(options["two_stage"]), options["quantize_mode"]


def _describe(options: dict[str, Any]) -> str:
    return f"{'two' if options['two_stage'] else 'single'}-stage {options['quantize_mode'].upper()}"


def _names_of_kind(options: dict[str, Any]) -> list[str]:
    return sorted(n for n, r in RELEASES.items() if _kind(r) == _kind(options))


def _signature(options: dict[str, Any]) -> tuple:
    """What tells the releases apart: kind, token count and the encoder's width."""
    return (*_kind(options), options["num_tokens"], options["width"])


def _recognizes(name: str):
    def recognizes(path: Path) -> bool:
        config = (path if path.is_dir() else path.parent) / "config.json"
        if not config.is_file():
            return False
        try:
            options = options_from_config(read_json(config), config)
        except CheckpointError:
            return False
        if _signature(options) == _signature(RELEASES[name]):
            return True
        # Not one of the releases: every name of the same kind fits, and the caller must choose.
        known = {_signature(r) for r in RELEASES.values()}
        return _signature(options) not in known and _kind(options) == _kind(RELEASES[name])
    return recognizes


def build_titok_family(**options: Any) -> TiTokTokenizer:
    """The ``titok`` family: rebuilds a TiTok from a tokbench checkpoint's config."""
    return TiTokTokenizer(**options)


def _factory(name: str, repo: str):
    fixed = tuple(k for k in FIXED if k in RELEASES[name])
    release = Release(name, "titok", "config.json + model.safetensors", f"huggingface.co/yucornetto/{repo}",
                      PREPROCESSING, fixed=fixed)
    return public_factory(release, build, _recognizes(name))


build_l32 = _factory("titok-l32", "tokenizer_titok_l32_imagenet")
build_b64 = _factory("titok-b64", "tokenizer_titok_b64_imagenet")
build_s128 = _factory("titok-s128", "tokenizer_titok_s128_imagenet")
build_bl64_vq8k = _factory("titok-bl64-vq8k", "tokenizer_titok_bl64_vq8k_imagenet")
build_bl128_vq8k = _factory("titok-bl128-vq8k", "tokenizer_titok_bl128_vq8k_imagenet")
build_sl256_vq8k = _factory("titok-sl256-vq8k", "tokenizer_titok_sl256_vq8k_imagenet")
build_bl64_vae_c16 = _factory("titok-bl64-vae-c16", "tokenizer_titok_bl64_vae_c16_imagenet")
build_bl128_vae_c16 = _factory("titok-bl128-vae-c16", "tokenizer_titok_bl128_vae_c16_imagenet")
build_ll32_vae_c16 = _factory("titok-ll32-vae-c16", "tokenizer_titok_ll32_vae_c16_imagenet")
