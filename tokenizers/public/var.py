"""VAR's multi-scale residual VQVAE (FoundationVision/VAR ``vae_ch160v4096z32.pth``) -> ``residual_scale``.

The file is a bare state dict; VAR's 512 px models (``var-vqvae-512``) use the same file with
the 512 px schedule 1,2,3,4,6,9,13,18,24,32 (VAR's ``train.py --pn 512``). Width comes from ``encoder.conv_in``, the codebook from
``quantize.embedding``; VAR fixes the rest itself (multipliers 1,1,2,2,4, two ResNet
blocks, attention at the lowest level and in the middle, 3x3 quant convs, four shared φ
convs). The scale schedule is not in the file: VAR's release schedule is used, cut at the
final map size (1,2,3,4 at 64 px), and each scale picks its φ by VAR's own ticks
(``phi_ticks="var"``). ``quantize.ema_vocab_hit_SV`` is a usage statistic and is ignored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tokbench.quantize import VAR_SCALES_256
from tokbench.tokenizers.public.conv_keys import autoencoder_keymap, count_indexed
from tokbench.tokenizers.public.keymap import load_converted
from tokbench.tokenizers.public.release import (PICKLE_SUFFIXES, Release, drop, file_keys, public_factory, read_any,
                                                resolve_options, state_dict_of)
from tokbench.tokenizers.residual_scale import ResidualScaleTokenizer

IGNORED_KEYS = ("quantize.ema_vocab_hit_SV",)
OWN_BUFFERS = ("quantize.codes.step", "quantize.codes.last_hit_step", "quantize.codes.last_restart_step",
               "quantize.codes.hit_ema")
PREPROCESSING = ("resize the shorter side to 288 (1.125 x 256, LANCZOS), center crop 256x256; then 2x - 1")
VAR_SCALES_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)
RELEASE = dict(ch=160, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=32, codebook_size=4096, code_dim=32,
               scales=VAR_SCALES_256, num_phi_convs=4, phi_ratio=0.5, phi_ticks="var", truncate_scales=True)
RELEASES = {"var-vqvae": RELEASE, "var-vqvae-512": {**RELEASE, "scales": VAR_SCALES_512}}
PREPROCESSING_512 = "resize the shorter side to 576 (1.125 x 512, LANCZOS), center crop 512x512; then 2x - 1"


def infer_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Width and codebook read off a VAR VQVAE state dict (KeyError if it is not one)."""
    codebook_size, code_dim = state["quantize.embedding.weight"].shape
    num_phi_convs = count_indexed(state, "quantize.quant_resi.qresi_ls.")
    if num_phi_convs == 0:
        raise KeyError("quantize.quant_resi.qresi_ls.0")
    return dict(ch=state["encoder.conv_in.weight"].shape[0], codebook_size=codebook_size, code_dim=code_dim,
                z_channels=state["quant_conv.weight"].shape[1], num_phi_convs=num_phi_convs)


def keymap_for(options: dict[str, Any]):
    km = autoencoder_keymap("var", options["ch"], tuple(options["ch_mult"]), options["num_res_blocks"],
                            lowest_level_attn=True)
    km.rename("quantize.codes.embedding", "quantize.embedding.weight")
    for i in range(options["num_phi_convs"]):
        km.params(f"quantize.phis.phis.{i}", f"quantize.quant_resi.qresi_ls.{i}")
    return km


def build(release: Release, weights: Path | None, **overrides: Any) -> ResidualScaleTokenizer:
    base = RELEASES[release.name]
    if weights is None:
        return ResidualScaleTokenizer(**resolve_options(release.name, base, {}, overrides))
    state = drop(state_dict_of(read_any(weights), weights, ("state_dict", "model")), keys=IGNORED_KEYS)
    try:
        from_file = infer_config(state)
    except (KeyError, IndexError):
        from_file = {}
    options = resolve_options(release.name, base, from_file, overrides, source=str(weights))
    model = ResidualScaleTokenizer(**options)
    source = f"{weights} (as {release.name})"
    load_converted(model, keymap_for(options).apply(state, source), source, OWN_BUFFERS)
    return model.eval()


def recognizes(path: Path) -> bool:
    if path.is_dir() or path.suffix not in PICKLE_SUFFIXES:
        return False
    return "quantize.ema_vocab_hit_SV" in file_keys(path)


build_vqvae = public_factory(
    Release("var-vqvae", "residual_scale", "vae_ch160v4096z32.pth", "huggingface.co/FoundationVision/var",
            PREPROCESSING),
    build, recognizes)
# The same file at 512 px: only the schedule differs, so the file alone cannot tell; loaded by name.
build_vqvae_512 = public_factory(
    Release("var-vqvae-512", "residual_scale", "vae_ch160v4096z32.pth (the same file as var-vqvae)",
            "huggingface.co/FoundationVision/var (used by VAR-d36 at 512 px)", PREPROCESSING_512),
    build, None)
