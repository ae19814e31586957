"""TiTok releases (``yucornetto/tokenizer_titok_{l32,b64,s128}_imagenet``) -> `TiTokTokenizer`.

A release is a Hugging Face folder: ``config.json`` (the whole OmegaConf training config,
``model.vq_model.*`` and ``dataset.preprocessing.crop_size``) + ``model.safetensors``
holding the ViT tokenizer and, for the two-stage models, the MaskGIT pixel decoder and its
1024-code proxy codebook. The ViT sizes are named in the config (``small``/``base``/
``large``); the pixel decoder's sizes are not, and are read off the tensors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tokbench.checkpoint import CheckpointError
from tokbench.tokenizers.public.conv_keys import count_indexed
from tokbench.tokenizers.public.keymap import KeyMap, load_converted
from tokbench.tokenizers.public.release import Release, public_factory, read_any, read_json, resolve_options
from tokbench.tokenizers.public.titok_model import TiTokTokenizer

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
OWN_BUFFERS = ("quantize.step", "quantize.last_hit_step", "quantize.last_restart_step", "quantize.hit_ema")
# Upstream's named ViT sizes: (width, depth, heads). "tiny" is the reduced size of the
# adapter test fixture (upstream's table patched in memory, see the fixture README).
VIT_SIZES = {"small": (512, 8, 8), "base": (768, 12, 12), "large": (1024, 24, 16), "tiny": (64, 2, 2)}
PREPROCESSING = "shorter side resized to 256 (bicubic, antialias), center crop 256x256; [0, 1] as is"
_COMMON = dict(image_size=256, patch_size=16, codebook_size=4096, code_dim=12, legacy=True, num_proxy_codes=1024,
               pixel_ch=128, pixel_ch_mult=(1, 1, 2, 2, 4), pixel_num_res_blocks=2, pixel_z_channels=256)


def _vit(size: str, prefix: str) -> dict[str, Any]:
    width, depth, heads = VIT_SIZES[size]
    return {f"{prefix}width": width, f"{prefix}depth": depth, f"{prefix}heads": heads}


RELEASES = {
    "titok-l32": dict(_COMMON, num_tokens=32, **_vit("large", ""), **_vit("large", "dec_")),
    "titok-b64": dict(_COMMON, num_tokens=64, **_vit("base", ""), **_vit("base", "dec_")),
    "titok-s128": dict(_COMMON, num_tokens=128, **_vit("small", ""), **_vit("small", "dec_")),
}
FIXED = ("num_tokens", "codebook_size", "code_dim", "patch_size", "width", "depth", "heads", "dec_width",
         "dec_depth", "dec_heads", "legacy", "num_proxy_codes")


def options_from_config(config: dict[str, Any], path: Path) -> dict[str, Any]:
    """Options from a release's ``config.json``."""
    try:
        vq = config["model"]["vq_model"]
        if vq.get("quantize_mode", "vq") != "vq" or not vq.get("finetune_decoder", True) or not vq["use_l2_norm"]:
            raise CheckpointError(f"{path}: only two-stage VQ TiTok releases (finetune_decoder, use_l2_norm) are supported")
        if vq["vit_enc_patch_size"] != vq["vit_dec_patch_size"]:
            raise CheckpointError(f"{path}: encoder and decoder patch sizes differ")
        for key in ("vit_enc_model_size", "vit_dec_model_size"):
            if vq[key] not in VIT_SIZES:
                raise CheckpointError(f"{path}: unknown ViT size {vq[key]!r}; known: {', '.join(VIT_SIZES)}")
        return dict(image_size=int(config["dataset"]["preprocessing"]["crop_size"]),
                    patch_size=int(vq["vit_enc_patch_size"]), num_tokens=int(vq["num_latent_tokens"]),
                    codebook_size=int(vq["codebook_size"]), code_dim=int(vq["token_size"]),
                    legacy=bool(vq.get("is_legacy", True)),
                    **_vit(vq["vit_enc_model_size"], ""), **_vit(vq["vit_dec_model_size"], "dec_"))
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
    for key in overrides:
        if key in release.fixed:
            raise ValueError(f"{release.name}: option {key} cannot be changed: the release fixes "
                             f"{key}={RELEASES[release.name][key]!r}")
    base = RELEASES[release.name]
    if weights is None:
        return TiTokTokenizer(**resolve_options(release.name, base, {}, overrides))
    config_path, tensors = find_files(weights)
    state = read_any(tensors)
    from_file = options_from_config(read_json(config_path), config_path)
    try:
        from_file.update(options_from_state(state))
    except (KeyError, IndexError):
        pass  # the key check below reports what is missing
    model = TiTokTokenizer(**resolve_options(release.name, base, from_file, overrides, source=str(weights)))
    source = f"{tensors} (as {release.name})"
    load_converted(model, keymap_for(model).apply(state, source), source, OWN_BUFFERS)
    return model.eval()


def _recognizes(name: str):
    def recognizes(path: Path) -> bool:
        config = (path if path.is_dir() else path.parent) / "config.json"
        if not config.is_file():
            return False
        vq = read_json(config).get("model", {}).get("vq_model")
        if not isinstance(vq, dict) or "num_latent_tokens" not in vq:
            return False
        release = RELEASES[name]
        size = VIT_SIZES.get(vq.get("vit_enc_model_size"), ())
        if (vq["num_latent_tokens"], size[:1]) == (release["num_tokens"], (release["width"],)):
            return True
        # Not one of the releases: every TiTok name fits, and the caller must choose.
        known = {(r["num_tokens"], r["width"]) for r in RELEASES.values()}
        return (vq["num_latent_tokens"], size[0] if size else None) not in known
    return recognizes


def build_titok_family(**options: Any) -> TiTokTokenizer:
    """The ``titok`` family: rebuilds a TiTok from a tokbench checkpoint's config."""
    return TiTokTokenizer(**options)


_WHERE = "huggingface.co/yucornetto/tokenizer_titok_{l32,b64,s128}_imagenet"
build_l32 = public_factory(Release("titok-l32", "titok", "config.json + model.safetensors", _WHERE, PREPROCESSING,
                                   fixed=FIXED), build, _recognizes("titok-l32"))
build_b64 = public_factory(Release("titok-b64", "titok", "config.json + model.safetensors", _WHERE, PREPROCESSING,
                                   fixed=FIXED), build, _recognizes("titok-b64"))
build_s128 = public_factory(Release("titok-s128", "titok", "config.json + model.safetensors", _WHERE, PREPROCESSING,
                                    fixed=FIXED), build, _recognizes("titok-s128"))
