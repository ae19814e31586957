"""GigaTok releases (SilentView/GigaTok ``VQ_{SS,SB,BL,XLXXL}256_e*.pt``) -> `GigaTokTokenizer`.

A release is upstream's training checkpoint: ``torch.save`` of a dict whose weights are the
first of ``ema``, ``model``, ``state_dict`` present (upstream's own order), beside training
entries (``steps``, optimizer states, ``args``, an ``argparse.Namespace``). Ignored tensors:
``quantize.codebook_used`` (training usage history) and ``s1to2decoder.distill_mlp.*`` (the
semantic-distillation head, training only). Everything else is read off the tensors; the ViT
head counts, which tensors do not show, come from upstream's size table by (width, depth).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from tokbench.checkpoint import CheckpointError
from tokbench.tokenizers.public.conv_keys import add_autoencoder_part, count_indexed
from tokbench.tokenizers.public.gigatok_model import GigaTokTokenizer
from tokbench.tokenizers.public.keymap import Entry, KeyMap, load_converted
from tokbench.tokenizers.public.release import (PICKLE_SUFFIXES, Release, drop, file_index, public_factory, read_any,
                                                resolve_options, state_dict_of, options_read_off, refuse_fixed_overrides)

CONTAINERS = ("ema", "model", "state_dict")  # upstream's reconstruction_ddp.py order
IGNORED_KEYS = ("quantize.codebook_used",)
IGNORED_PREFIXES = ("s1to2decoder.distill_mlp.",)
OWN_BUFFERS = ("quantize.step", "quantize.last_hit_step", "quantize.last_restart_step", "quantize.hit_ema")
PREPROCESSING = ("ADM center crop: shorter side halved with BOX while >= 2x the target, then BICUBIC to 256, "
                 "center crop 256x256; then (x - 0.5) / 0.5")
# Upstream's named ViT sizes (blocks.py): (width, depth, heads). "nano" is the reduced size of
# the adapter test fixture (upstream's table patched in memory, see make_gigatok_fixture.py).
VIT_SIZES = {"nano": (32, 2, 2), "tiny": (256, 4, 4), "small": (512, 6, 8), "base": (768, 12, 12),
             "large": (1024, 24, 16), "xl": (1280, 36, 20), "xxl": (1536, 48, 24)}
_CNN = dict(image_size=256, ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=256, num_tokens=256,
            codebook_size=16384, code_dim=8)


def _sizes(enc: str, dec: str) -> dict[str, int]:
    (w, d, h), (dw, dd, dh) = VIT_SIZES[enc], VIT_SIZES[dec]
    return dict(width=w, depth=d, heads=h, dec_width=dw, dec_depth=dd, dec_heads=dh)


# name: (options, released file)
RELEASES = {
    "gigatok-ss256": (dict(_CNN, **_sizes("small", "small")), "VQ_SS256_e100.pt"),
    "gigatok-sb256": (dict(_CNN, **_sizes("small", "base")), "VQ_SB256_e200.pt"),
    "gigatok-bl256": (dict(_CNN, **_sizes("base", "large")), "VQ_BL256_e200.pt"),
    "gigatok-bl256-dino-disc": (dict(_CNN, **_sizes("base", "large")), "VQ_BL256_dino_disc.pt"),
    "gigatok-xlxxl256": (dict(_CNN, **_sizes("xl", "xxl")), "VQ_XLXXL256_e300.pt"),
}
FIXED = tuple(_CNN) + ("width", "depth", "heads", "dec_width", "dec_depth", "dec_heads")


def _heads(width: int, depth: int, where: str) -> int:
    for w, d, h in VIT_SIZES.values():
        if (w, d) == (width, depth):
            return h
    known = ", ".join(f"{n} ({w}x{d})" for n, (w, d, _) in VIT_SIZES.items())
    raise CheckpointError(f"{where}: a {width}-wide, {depth}-deep Q-former is none of GigaTok's sizes ({known})")


def options_from_state(state: dict[str, torch.Tensor], where: str) -> dict[str, Any]:
    """Architecture options read off a GigaTok state dict (KeyError/IndexError if it is not one)."""
    ch = state["encoder.conv_in.weight"].shape[0]
    levels = count_indexed(state, "encoder.conv_blocks.")
    ch_mult = tuple(state[f"encoder.conv_blocks.{i}.res.0.conv1.weight"].shape[0] // ch for i in range(levels))
    codebook_size, code_dim = state["quantize.embedding.weight"].shape
    options = dict(ch=ch, ch_mult=ch_mult, num_res_blocks=count_indexed(state, "encoder.conv_blocks.0.res."),
                   z_channels=state["quant_conv.weight"].shape[1], codebook_size=codebook_size, code_dim=code_dim,
                   num_tokens=state["s2to1encoder.latent_token_positional_embedding"].shape[0],
                   image_size=math.isqrt(state["s2to1encoder.positional_embedding"].shape[0]) * 2 ** (levels - 1))
    for prefix, part, embed in (("", "s2to1encoder", "encoder_embed"), ("dec_", "s1to2decoder", "decoder_embed")):
        width, depth = state[f"{part}.{embed}.weight"].shape[0], count_indexed(state, f"{part}.transformer.")
        options.update({f"{prefix}width": width, f"{prefix}depth": depth,
                        f"{prefix}heads": _heads(width, depth, f"{where} ({part})")})
    return options


def keymap_for(model: GigaTokTokenizer) -> KeyMap:
    """The CNN encoder through LlamaGen's naming (its middle, without attention, is ``mid.0``/``mid.1``);
    every other tensor under its own name, but the codebook and the decoder's conv shortcuts."""
    cfg = model.config
    enc = KeyMap()
    add_autoencoder_part(enc, "llamagen", "encoder", cfg["ch"], tuple(cfg["ch_mult"]), cfg["num_res_blocks"], set(),
                         mid_attn=False)
    km = KeyMap([Entry(e.dst, tuple(s.replace("encoder.mid.2.", "encoder.mid.1.") for s in e.srcs), e.combine)
                 for e in enc.entries])
    for key in model.state_dict():
        if key.startswith(("encoder.", "quantize.")):
            continue
        km.rename(key, key.replace(".skip.", ".nin_shortcut."))
    km.rename("quantize.embedding", "quantize.embedding.weight")
    return km


def read_state(path: Path) -> dict[str, torch.Tensor]:
    return drop(state_dict_of(read_any(path), path, CONTAINERS), IGNORED_PREFIXES, IGNORED_KEYS)


def build(release: Release, weights: Path | None, **overrides: Any) -> GigaTokTokenizer:
    base = RELEASES[release.name][0]
    refuse_fixed_overrides(release, base, overrides)
    if weights is None:
        return GigaTokTokenizer(**resolve_options(release.name, base, {}, overrides))
    state = read_state(weights)
    from_file = options_read_off(options_from_state, state, str(weights))
    model = GigaTokTokenizer(**resolve_options(release.name, base, from_file, overrides, source=str(weights)))
    source = f"{weights} (as {release.name})"
    load_converted(model, keymap_for(model).apply(state, source), source, OWN_BUFFERS)
    return model.eval()


def _recognizes(name: str):
    """A file whose Q-former widths (encoder, decoder) are this release's."""
    mine = (RELEASES[name][0]["width"], RELEASES[name][0]["dec_width"])
    releases = {(o["width"], o["dec_width"]) for o, _ in RELEASES.values()}

    def recognizes(path: Path) -> bool:
        if path.is_dir() or path.suffix not in PICKLE_SUFFIXES:
            return False
        index = file_index(path)
        for container in CONTAINERS:
            enc, dec = (index.get(f"{container}/{p}.weight") for p in ("s2to1encoder.encoder_embed",
                                                                       "s1to2decoder.decoder_embed"))
            if enc and dec:
                # Not one of the releases' sizes: every GigaTok name fits, and the caller must choose.
                return (enc[0], dec[0]) == mine or (enc[0], dec[0]) not in releases
        return False
    return recognizes


def build_gigatok_family(**options: Any) -> GigaTokTokenizer:
    """The ``gigatok`` family: rebuilds a GigaTok from a tokbench checkpoint's config."""
    return GigaTokTokenizer(**options)


def _factory(name: str):
    options, file = RELEASES[name]
    release = Release(name, "gigatok", f"{file} (torch.save; weights under 'ema', else 'model')",
                      "github.com/SilentView/GigaTok (Google Drive links in its README)", PREPROCESSING,
                      fixed=FIXED)
    return public_factory(release, build, _recognizes(name))


build_ss256 = _factory("gigatok-ss256")
build_sb256 = _factory("gigatok-sb256")
build_bl256 = _factory("gigatok-bl256")
build_bl256_dino_disc = _factory("gigatok-bl256-dino-disc")
build_xlxxl256 = _factory("gigatok-xlxxl256")
