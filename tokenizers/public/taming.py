"""taming-transformers' VQGAN (``vqgan_imagenet_f16_16384``, ``..._f16_1024``) -> ``vq``.

The release is a PyTorch Lightning 1.x ``last.ckpt`` next to ``configs/model.yaml``. The
yaml (``model.params``: ``embed_dim``, ``n_embed``, ``ddconfig``) is read when present;
otherwise the sizes are read off the tensors. ``attn_resolutions`` become the family's
``attn_levels``. Codes are compared as they are (no l2 normalization). The checkpoint's
``loss.*`` entries (LPIPS, discriminator) and its optimizer and callback states are
training-only and ignored; its ``callbacks`` entry names a Lightning class, which
`tokbench.checkpoint.torch_load_safely` maps to an inert stand-in.

Chameleon's (and Anole's) image tokenizer is this VQGAN (``chameleon/inference/vqgan.py``
has taming's modules and quantizer): ``tokenizer/vqgan.ckpt`` (``state_dict``) beside
``tokenizer/vqgan.yaml``, 8,192 codes of dimension 256, f16 at 512 px (32 x 32 ids); its file, plain
tensors without Lightning's ``callbacks``, is told from taming's by that and its codebook size.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from tokbench.checkpoint import CheckpointError
from tokbench.tokenizers.public.conv_keys import autoencoder_keymap, count_indexed, encoder_sizes
from tokbench.tokenizers.public.keymap import load_converted
from tokbench.tokenizers.public.release import (Release, drop, file_index, public_factory, read_any,
                                                resolve_options, state_dict_of, options_read_off)
from tokbench.tokenizers.vq import VQTokenizer

OWN_BUFFERS = ("quantize.step", "quantize.last_hit_step", "quantize.last_restart_step", "quantize.hit_ema")
PREPROCESSING = ("ImageNet validation: shorter side resized to 256 (albumentations SmallestMaxSize), "
                 "center crop 256x256; then 2x - 1")
_DDCONFIG = dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=256, attn_levels=(4,))
RELEASES = {
    "taming-vqgan-f16-16384": dict(_DDCONFIG, codebook_size=16384, code_dim=256),
    "taming-vqgan-f16-1024": dict(_DDCONFIG, codebook_size=1024, code_dim=256),
    # Attention levels come from the shipped vqgan.yaml; none is assumed without it.
    "chameleon-vqgan": dict(_DDCONFIG, attn_levels=(), codebook_size=8192, code_dim=256),
}
PREPROCESSING_CHAMELEON = ("transparent pixels whitened, shorter side resized to 512 (LANCZOS), center crop "
                           "512x512; then 2x - 1")
FAMILY_DEFAULTS = dict(l2_normalize=False, lowest_level_attn=False)


def options_from_yaml(path: Path) -> dict[str, Any]:
    """Family options from taming's ``model.yaml`` (``model.params``)."""
    try:
        params = yaml.safe_load(path.read_text())["model"]["params"]
        dd = params["ddconfig"]
        levels = len(dd["ch_mult"])
        attn = [lvl for lvl in range(levels) if dd["resolution"] // 2 ** lvl in set(dd.get("attn_resolutions", []))]
        return dict(ch=dd["ch"], ch_mult=tuple(dd["ch_mult"]), num_res_blocks=dd["num_res_blocks"],
                    z_channels=dd["z_channels"], attn_levels=tuple(attn), codebook_size=params["n_embed"],
                    code_dim=params["embed_dim"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: not a taming model.yaml with model.params.ddconfig ({err})") from err


def options_from_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The same options read off the tensors (for a ``last.ckpt`` without its yaml)."""
    sizes = encoder_sizes(state)
    levels = len(sizes["ch_mult"])
    codebook_size, code_dim = state["quantize.embedding.weight"].shape
    return dict(sizes, z_channels=state["quant_conv.weight"].shape[1], codebook_size=codebook_size, code_dim=code_dim,
                attn_levels=tuple(i for i in range(levels) if f"encoder.down.{i}.attn.0.q.weight" in state))


def find_yaml(weights: Path) -> Path | None:
    """``configs/model.yaml`` beside ``ckpts/last.ckpt`` (the release layout), or a yaml next to the file."""
    for candidate in (weights.parent.parent / "configs" / "model.yaml", weights.parent / "model.yaml",
                      weights.with_suffix(".yaml")):
        if candidate.is_file():
            return candidate
    return None


def keymap_for(options: dict[str, Any]):
    km = autoencoder_keymap("ldm", options["ch"], tuple(options["ch_mult"]), options["num_res_blocks"],
                            attn_levels=options["attn_levels"])
    km.rename("quantize.embedding", "quantize.embedding.weight")
    return km


def build(release: Release, weights: Path | None, **overrides: Any) -> VQTokenizer:
    base = {**RELEASES[release.name], **FAMILY_DEFAULTS}
    if weights is None:
        return VQTokenizer(**resolve_options(release.name, base, {}, overrides))
    state = drop(state_dict_of(read_any(weights), weights, ("state_dict",)), prefixes=("loss.",))
    config_file = find_yaml(weights)
    from_file = (options_read_off(options_from_yaml, config_file) if config_file
                 else options_read_off(options_from_state, state))
    return load_taming_layout(release, base, state, from_file, overrides, weights, config_file or weights)


def load_taming_layout(release: Release, base: dict[str, Any], state: dict[str, torch.Tensor],
                       from_file: dict[str, Any], overrides: dict[str, Any], weights: Path,
                       options_source: Path) -> VQTokenizer:
    """A ``vq`` tokenizer from a state dict in taming's key layout (taming, IBQ): the release's
    options, then what the file says (read from ``options_source``), then the user's overrides."""
    options = resolve_options(release.name, base, from_file, overrides, source=str(options_source))
    model = VQTokenizer(**options)
    source = f"{weights} (as {release.name})"
    load_converted(model, keymap_for(options).apply(state, source), source, OWN_BUFFERS)
    return model.eval()


def _recognizes(codebook_size: int):
    def recognizes(path: Path) -> bool:
        if path.is_dir() or path.suffix not in (".pt", ".pth", ".ckpt"):
            return False
        index = file_index(path)
        if "callbacks" not in index or "state_dict/quantize.embedding.weight" not in index:
            return False
        if "state_dict/model_ema.quantizeembeddingweight" in index:  # IBQ's layout (an EMA of the codes): ibq.py
            return False
        if count_indexed(index, "state_dict/encoder.down.") != 5:  # every taming release is f16; LDM's: vqmodel.py
            return False
        size = index["state_dict/quantize.embedding.weight"][0]
        # Another size than either release: both names fit, and the caller must choose.
        return size == codebook_size or size not in {r["codebook_size"] for r in RELEASES.values()}
    return recognizes


def recognizes_chameleon(path: Path) -> bool:
    """Chameleon's ``vqgan.ckpt``: taming's layout with 8,192 codes; or, without Lightning's
    ``callbacks`` (the release holds plain tensors), any codebook size but the taming releases'."""
    if path.is_dir() or path.suffix not in (".pt", ".pth", ".ckpt"):
        return False
    index = file_index(path)
    if "state_dict/quantize.embedding.weight" not in index or "state_dict/model_ema.quantizeembeddingweight" in index:
        return False
    size, code_dim = index["state_dict/quantize.embedding.weight"][:2]
    if code_dim <= 4:  # LDM's VQ autoencoders (3- or 4-dimensional codes): vqmodel.py
        return False
    taming_sizes = {r["codebook_size"] for n, r in RELEASES.items() if n.startswith("taming-")}
    return size == RELEASES["chameleon-vqgan"]["codebook_size"] or ("callbacks" not in index and size not in taming_sizes)


_WHERE = "github.com/CompVis/taming-transformers (heibox links)"
build_f16_16384 = public_factory(
    Release("taming-vqgan-f16-16384", "vq", "vqgan_imagenet_f16_16384: ckpts/last.ckpt + configs/model.yaml",
            _WHERE, PREPROCESSING), build, _recognizes(16384))
build_f16_1024 = public_factory(
    Release("taming-vqgan-f16-1024", "vq", "vqgan_imagenet_f16_1024: ckpts/last.ckpt + configs/model.yaml",
            _WHERE, PREPROCESSING), build, _recognizes(1024))
build_chameleon = public_factory(
    Release("chameleon-vqgan", "vq", "tokenizer/vqgan.ckpt + tokenizer/vqgan.yaml",
            "facebook/chameleon-7b and GAIR/Anole-7b-v0.1 (tokenizer/); github.com/facebookresearch/chameleon",
            PREPROCESSING_CHAMELEON), build, recognizes_chameleon)
