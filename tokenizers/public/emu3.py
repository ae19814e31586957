"""Emu3's vision tokenizer (``BAAI/Emu3-VisionTokenizer``) -> `Emu3Tokenizer` (``emu3`` family).

The release is a Hugging Face remote-code folder: ``config.json`` (``model_type`` ``Emu3VisionVQ``;
the sizes) + ``model.safetensors`` (fp32, upstream's module names). The 2D encoder and decoder use
taming/LDM names (``down.{i}.block.{j}``, ``mid.attn_1.q`` ...), so their map is `conv_keys`' ``ldm``
one, with each decoder norm's GroupNorm, scale and shift convs (``norm_layer``, ``conv_y``,
``conv_b``) spelled out; the temporal layers and the causal quant convs keep their own names.
BatchNorm3d statistics (``running_mean``, ``running_var``, ``num_batches_tracked``) are loaded too.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tokbench.checkpoint import CheckpointError
from tokbench.nn.conv import attention_levels
from tokbench.tokenizers.public.conv_keys import add_autoencoder_part
from tokbench.tokenizers.public.emu3_model import Emu3Tokenizer
from tokbench.tokenizers.public.keymap import Entry, KeyMap, load_converted
from tokbench.tokenizers.public.release import Release, public_factory, read_any, read_json, resolve_options
from tokbench.tokenizers.public.taming import OWN_BUFFERS  # a `VectorQuantizer` at ``quantize``: its bookkeeping

MODEL_TYPE = "Emu3VisionVQ"
WEIGHT_FILE = "model.safetensors"
BATCH_NORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
PREPROCESSING = ("Emu3VisionVQImageProcessor: smart_resize (sides rounded to multiples of 8, then scaled, aspect "
                 "kept, so that the pixel count lies in [512^2, 1024^2]; PIL bicubic), then 2x - 1; an image is "
                 "a clip of 4 copies, decoded as the clip's first frame")
RELEASES = {
    # BAAI/Emu3-VisionTokenizer config.json: the emu3 family's defaults.
    "emu3-vq": dict(ch=256, ch_mult=(1, 2, 2, 4), num_res_blocks=2, attn_levels=(3,), z_channels=4, embed_dim=4,
                    codebook_size=32768, temporal_downsample_factor=4),
}
# config.json key -> option; "attn_resolutions" holds level indices in Emu3's code.
CONFIG_KEYS = {"ch": "ch", "ch_mult": "ch_mult", "num_res_blocks": "num_res_blocks", "attn_resolutions": "attn_levels",
               "z_channels": "z_channels", "embed_dim": "embed_dim", "codebook_size": "codebook_size",
               "temporal_downsample_factor": "temporal_downsample_factor"}
_DECODER_NORM = re.compile(r"(decoder\..*(?:norm1|norm2|norm|norm_out))\.(weight|bias)")


def options_from_config(config: dict[str, Any], path: Path) -> dict[str, Any]:
    """Options from the release's ``config.json``."""
    if config.get("model_type") != MODEL_TYPE:
        raise CheckpointError(f"{path}: model_type {config.get('model_type')!r}, expected {MODEL_TYPE!r}")
    if config.get("double_z", False) or config.get("in_channels", 3) != 3 or config.get("out_channels", 3) != 3:
        raise CheckpointError(f"{path}: only double_z=false with 3 input and output channels is supported")
    return {option: config[key] for key, option in CONFIG_KEYS.items() if key in config}


def _conditioned_norms(decoder: KeyMap) -> list[Entry]:
    """The ``ldm`` decoder map with each norm's weight/bias read as MoVQ's spatial norm's three parts."""
    entries = []
    for entry in decoder.entries:
        match = _DECODER_NORM.fullmatch(entry.srcs[0]) if len(entry.srcs) == 1 else None
        if match is None:
            entries.append(entry)
            continue
        src, param = match.groups()
        dst = entry.dst.rsplit(".", 1)[0]
        entries += [Entry(f"{dst}.norm.{param}", (f"{src}.norm_layer.{param}",)),
                    Entry(f"{dst}.to_scale.{param}", (f"{src}.conv_y.{param}",)),
                    Entry(f"{dst}.to_shift.{param}", (f"{src}.conv_b.{param}",))]
    return entries


def _temporal(km: KeyMap, dst: str, src: str, num_res_blocks: int, conv_dsts: list[str]) -> None:
    """``{src}.time_res_stack.*`` and ``{src}.time_conv.{i}`` (each a module around a `CausalConv3d`)."""
    for j in range(num_res_blocks):
        for norm in ("norm1", "norm2"):
            km.params(f"{dst}.res.{j}.{norm}", f"{src}.time_res_stack.{j}.{norm}", BATCH_NORM)
        for conv in ("conv1", "conv2"):
            km.params(f"{dst}.res.{j}.{conv}.conv", f"{src}.time_res_stack.{j}.{conv}.conv")
    for i, conv_dst in enumerate(conv_dsts):
        km.params(f"{dst}.{conv_dst}.conv", f"{src}.time_conv.{i}.conv.conv")


def keymap_for(config: dict[str, Any]) -> KeyMap:
    """Upstream names (``Emu3VisionVQModel.state_dict()``) of every tensor of an `Emu3Tokenizer`."""
    ch, ch_mult, nrb = config["ch"], tuple(config["ch_mult"]), config["num_res_blocks"]
    levels = attention_levels(len(ch_mult), False, tuple(config["attn_levels"]))
    convs = config["temporal_downsample_factor"].bit_length() - 1
    km, decoder = KeyMap(), KeyMap()
    add_autoencoder_part(km, "ldm", "encoder", ch, ch_mult, nrb, levels)
    add_autoencoder_part(decoder, "ldm", "decoder", ch, ch_mult, nrb, levels)
    km.entries += _conditioned_norms(decoder)
    _temporal(km, "encoder_time", "encoder", nrb, [f"down.{i}" for i in range(convs)])  # CausalConv3d's
    _temporal(km, "decoder_time", "decoder", nrb, [f"up.{i}.conv" for i in range(convs)])  # TemporalUpsample's
    for name in ("quant_conv", "post_quant_conv"):
        km.params(f"{name}.conv", f"{name}.conv")
    km.rename("quantize.embedding", "quantize.embedding.weight")
    return km


def find_files(weights: Path) -> tuple[Path, Path]:
    """``config.json`` and ``model.safetensors`` of a release folder (given as the folder or its weights file)."""
    folder = weights if weights.is_dir() else weights.parent
    tensors = weights if weights.is_file() else folder / WEIGHT_FILE
    config = folder / "config.json"
    if not (tensors.is_file() and config.is_file()):
        raise CheckpointError(f"{weights}: an Emu3 vision tokenizer release is a folder with config.json and "
                              f"{WEIGHT_FILE}")
    return config, tensors


def build(release: Release, weights: Path | None, **overrides: Any) -> Emu3Tokenizer:
    base = RELEASES[release.name]
    if weights is None:
        return Emu3Tokenizer(**resolve_options(release.name, base, {}, overrides)).eval()
    config_path, tensors = find_files(weights)
    from_file = options_from_config(read_json(config_path), config_path)
    options = resolve_options(release.name, base, from_file, overrides, source=str(weights))
    try:
        model = Emu3Tokenizer(**options)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{config_path}: {err}") from err
    source = f"{tensors} (as {release.name})"
    load_converted(model, keymap_for(model.config).apply(read_any(tensors), source), source, OWN_BUFFERS)
    return model.eval()  # BatchNorm3d: the stored statistics, never the batch's


def recognizes(path: Path) -> bool:
    config = (path if path.is_dir() else path.parent) / "config.json"
    return config.is_file() and read_json(config).get("model_type") == MODEL_TYPE


def build_emu3_family(**options: Any) -> Emu3Tokenizer:
    """The ``emu3`` family: rebuilds an Emu3 tokenizer from a tokbench checkpoint's config."""
    return Emu3Tokenizer(**options).eval()


build_vq = public_factory(
    Release("emu3-vq", "emu3", "config.json + model.safetensors (Hugging Face remote-code folder)",
            "huggingface.co/BAAI/Emu3-VisionTokenizer; github.com/baaivision/Emu3", PREPROCESSING),
    build, recognizes)
