"""diffusers ``VQModel`` releases: aMUSEd's VQ-GAN (HF ``amused/amused-256``, ``amused-512``: ``vqvae/``) -> ``vq``;
Kandinsky 2.x's MoVQ (HF ``kandinsky-community/kandinsky-2-2-decoder``: ``movq/``) -> ``movq``.

A diffusers ``VQModel`` folder (``config.json`` + ``diffusion_pytorch_model.safetensors``, or its
``.fp16.safetensors`` variant, upcast to float32; or a whole pipeline folder, whose ``vqvae/`` or
``movq/`` is used) in diffusers' names: ``encoder.down_blocks``, ``decoder.up_blocks``, ``quant_conv``,
``quantize.embedding.weight``, ``post_quant_conv``. Sizes come from ``config.json``
(``block_out_channels``, ``layers_per_block``, ``latent_channels``, ``vq_embed_dim``,
``num_vq_embeddings``, ``mid_block_add_attention``; ``Attn*Block2D`` types put attention after every
ResNet block of their level); codes are compared as they are (nearest in L2).

aMUSEd's VQ-GAN (open-muse's, converted by diffusers' ``scripts/convert_amused.py``; the 256 and 512
pipelines ship the same one) has no attention anywhere and works on images in [0, 1]
(``VaeImageProcessor(do_normalize=False)``; its pipeline clips the decoding to [0, 1]): the
release fixes ``unit_range``. Kandinsky's MoVQ (``norm_type: "spatial"``: every decoder norm is
conditioned on the quantized map) is `MoVQTokenizer`; its pipelines use images in [-1, 1]. A release
name's norm type is checked against the file's.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tokbench.checkpoint import CheckpointError
from tokbench.tokenizers.public.conv_keys import add_autoencoder_part
from tokbench.tokenizers.public.keymap import Entry, KeyMap, load_converted
from tokbench.tokenizers.public.release import (Release, public_factory, read_any, read_json, refuse_fixed_overrides,
                                                resolve_options, state_dict_of)
from tokbench.tokenizers.public.sd_vae import as_float32
from tokbench.tokenizers.public.vqmodel_movq_model import MoVQTokenizer
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
    # diffusers MOVQ_CONFIG (convert_kandinsky_to_diffusers.py): attention at f8 on both sides.
    "kandinsky-movq": dict(ch=128, ch_mult=(1, 2, 2, 4), num_res_blocks=2, attn_levels=(3,), z_channels=4, code_dim=4,
                           codebook_size=16384),
}
NORM_TYPES = {"amused-vqgan": "group", "kandinsky-movq": "spatial"}
PREPROCESSING_KANDINSKY = ("none fixed for evaluation by the release (Kandinsky 2.2 works at 512-768 px); inputs "
                           "2x - 1, reconstructions y * 0.5 + 0.5 clamped to [0, 1] (its pipelines)")
_DECODER_NORM = re.compile(r"(decoder(?:\..+)?)\.(norm1|norm2|group_norm|conv_norm_out)\.(weight|bias)")


def options_from_config(config: dict[str, Any], path: Path, norm_type: str) -> dict[str, Any]:
    """Family options from a diffusers ``VQModel`` ``config.json`` with the given ``norm_type``; what
    the family cannot build is refused."""
    if config.get("_class_name") != "VQModel":
        raise CheckpointError(f"{path}: _class_name {config.get('_class_name')!r}, expected 'VQModel'")
    if config.get("norm_type", "group") != norm_type:
        raise CheckpointError(f"{path}: norm_type={config.get('norm_type', 'group')!r} is not supported by this "
                              f"name (expected {norm_type!r}; 'spatial' is Kandinsky's MoVQ: kandinsky-movq)")
    try:
        down, up = list(config["down_block_types"]), list(config["up_block_types"])
        if not set(down) <= {"DownEncoderBlock2D", "AttnDownEncoderBlock2D"} or not set(up) <= {
                "UpDecoderBlock2D", "AttnUpDecoderBlock2D"}:
            raise CheckpointError(f"{path}: block types {sorted(set(down + up))} not supported (expected "
                                  "[Attn]DownEncoderBlock2D and [Attn]UpDecoderBlock2D)")
        attn_levels = tuple(i for i, t in enumerate(down) if t.startswith("Attn"))
        if attn_levels != tuple(sorted(len(up) - 1 - i for i, t in enumerate(up) if t.startswith("Attn"))):
            raise CheckpointError(f"{path}: attention levels of the encoder and decoder differ (not supported)")
        fixed = dict(act_fn="silu", norm_num_groups=32, in_channels=3, out_channels=3)
        for key, value in fixed.items():
            if config.get(key, value) != value:
                raise CheckpointError(f"{path}: {key}={config[key]!r} is not supported (expected {value!r})")
        boc = [int(c) for c in config["block_out_channels"]]
        if any(c % boc[0] for c in boc):
            raise CheckpointError(f"{path}: block_out_channels {boc} are not multiples of the first")
        latent = int(config["latent_channels"])
        options = dict(ch=boc[0], ch_mult=tuple(c // boc[0] for c in boc),
                       num_res_blocks=int(config["layers_per_block"]), z_channels=latent,
                       code_dim=int(config.get("vq_embed_dim") or latent),
                       codebook_size=int(config["num_vq_embeddings"]), attn_levels=attn_levels)
        mid_attn = bool(config.get("mid_block_add_attention", True))
        if norm_type == "group":
            return dict(options, mid_attn=mid_attn)
        if not mid_attn:
            raise CheckpointError(f"{path}: mid_block_add_attention=false with spatial norms is not supported")
        return options
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: not a diffusers VQModel config ({err})") from err


def vqvae_folder(path: Path) -> Path:
    """The ``VQModel`` folder: the path itself, or a pipeline folder's ``vqvae/`` (aMUSEd) or ``movq/`` (Kandinsky)."""
    if not (path / "model_index.json").is_file():
        return path
    return path / "movq" if (path / "movq").is_dir() else path / "vqvae"


def _spatial_norms(decoder: KeyMap) -> list[Entry]:
    """A diffusers decoder map with each norm read as a ``SpatialNorm``'s three parts (``norm_layer``,
    ``conv_y``, ``conv_b``; an attention's ``group_norm`` is its ``spatial_norm``)."""
    entries = []
    for entry in decoder.entries:
        match = _DECODER_NORM.fullmatch(entry.srcs[0]) if len(entry.srcs) == 1 else None
        if match is None:
            entries.append(entry)
            continue
        prefix, norm, param = match.groups()
        src = f"{prefix}.{'spatial_norm' if norm == 'group_norm' else norm}"
        dst = entry.dst.rsplit(".", 1)[0]
        entries += [Entry(f"{dst}.norm.{param}", (f"{src}.norm_layer.{param}",)),
                    Entry(f"{dst}.to_scale.{param}", (f"{src}.conv_y.{param}",)),
                    Entry(f"{dst}.to_shift.{param}", (f"{src}.conv_b.{param}",))]
    return entries


def keymap_for(options: dict[str, Any], spatial: bool = False) -> KeyMap:
    """diffusers ``VQModel`` names of every tensor (``spatial``: MoVQ's conditioned decoder norms)."""
    km, decoder = KeyMap(), KeyMap()
    for part, target in (("encoder", km), ("decoder", decoder)):
        add_autoencoder_part(target, "diffusers", part, options["ch"], tuple(options["ch_mult"]),
                             options["num_res_blocks"], set(options.get("attn_levels") or ()),
                             mid_attn=options.get("mid_attn", True))
    km.entries += _spatial_norms(decoder) if spatial else decoder.entries
    km.params("quant_conv", "quant_conv")
    km.params("post_quant_conv", "post_quant_conv")
    km.rename("quantize.embedding", "quantize.embedding.weight")
    return km


def build(release: Release, weights: Path | None, **overrides: Any) -> VQTokenizer | MoVQTokenizer:
    base, norm_type = RELEASES[release.name], NORM_TYPES[release.name]
    cls = MoVQTokenizer if norm_type == "spatial" else VQTokenizer
    refuse_fixed_overrides(release, base, overrides)
    if weights is None:
        return cls(**resolve_options(release.name, base, {}, overrides))
    folder = vqvae_folder(weights)
    if not folder.is_dir():
        raise CheckpointError(f"{weights}: expected a diffusers VQModel folder (config.json + {WEIGHTS[0]})")
    from_file = options_from_config(read_json(folder / "config.json"), folder / "config.json", norm_type)
    file = next((folder / n for n in WEIGHTS if (folder / n).is_file()), None)
    if file is None:
        raise CheckpointError(f"{folder}: no {' or '.join(WEIGHTS)}")
    state = as_float32(state_dict_of(read_any(file), file, ()))
    options = resolve_options(release.name, base, from_file, overrides, source=str(folder / "config.json"))
    model = cls(**options)
    source = f"{file} (as {release.name})"
    load_converted(model, keymap_for(options, norm_type == "spatial").apply(state, source), source, OWN_BUFFERS)
    return model.eval()


def _vqmodel_config(path: Path) -> dict[str, Any]:
    """The ``VQModel`` config of a folder (or of a pipeline's VQ folder); empty if it is none."""
    config = vqvae_folder(path) / "config.json"
    if not path.is_dir() or not config.is_file():
        return {}
    blob = read_json(config)
    return blob if blob.get("_class_name") == "VQModel" else {}


def recognizes_amused(path: Path) -> bool:
    """A diffusers VQModel folder (or pipeline) with group norms and no middle attention."""
    blob = _vqmodel_config(path)
    return blob.get("norm_type", "group") == "group" and blob.get("mid_block_add_attention") is False


def recognizes_movq(path: Path) -> bool:
    """A diffusers VQModel folder (or pipeline) with spatial norms."""
    return _vqmodel_config(path).get("norm_type") == "spatial"


def build_movq_family(**options: Any) -> MoVQTokenizer:
    """The ``movq`` family: rebuilds a MoVQ tokenizer from a tokbench checkpoint's config."""
    return MoVQTokenizer(**options).eval()


build_amused = public_factory(
    Release("amused-vqgan", "vq", "vqvae/ folder (config.json + diffusion_pytorch_model.safetensors)",
            "huggingface.co/amused/amused-256 (and amused-512) vqvae/; diffusers scripts/convert_amused.py",
            PREPROCESSING_AMUSED, fixed=("unit_range",)), build, recognizes_amused)
build_movq = public_factory(
    Release("kandinsky-movq", "movq", "movq/ folder (config.json + diffusion_pytorch_model.safetensors)",
            "huggingface.co/kandinsky-community/kandinsky-2-2-decoder movq/ (kandinsky-2-1's the same architecture); "
            "github.com/ai-forever/Kandinsky-2", PREPROCESSING_KANDINSKY), build, recognizes_movq)

__all__ = ["build_amused", "build_movq", "build_movq_family", "keymap_for", "options_from_config", "RELEASES"]
