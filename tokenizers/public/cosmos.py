"""NVIDIA Cosmos image tokenizers (``Cosmos-0.1-Tokenizer-{CI,DI}{8x8,16x16}``) -> ``cosmos``.

The release is a folder of TorchScript archives: ``encoder.jit`` (``encoder``, ``quant_conv`` and
the FSQ ``quantizer`` or the identity "distribution"), ``decoder.jit`` (DI: ``inv_quant.quantizer``,
then ``post_quant_conv``, ``decoder``) and ``autoencoder.jit`` (the whole network). tokbench never
runs them: `read_torchscript_tensors` takes the tensors out of each archive's ``data.pkl`` with a
restricted unpickler, and the architecture is tokbench's own (`cosmos_model`). ``weights`` is the
folder (``encoder.jit`` + ``decoder.jit``, else ``autoencoder.jit``) or an ``autoencoder.jit``.

Sizes are read off the tensors (widths, levels, which levels resample, attention); the buffers
TorchScript keeps besides the parameters are checked, not loaded: the Haar filter taps (anything else
-- upstream's ``patch_method="rearrange"`` -- is refused) and the FSQ ``_levels`` (the DI level list;
``_basis`` and ``implicit_codebook`` follow from it).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from tokbench.checkpoint import CheckpointError, is_torchscript_archive
from tokbench.tokenizers.public.conv_keys import add_autoencoder_part, count_indexed
from tokbench.tokenizers.public.cosmos_archive import read_torchscript_tensors
from tokbench.tokenizers.public.cosmos_model import RELEASE_LEVELS, CosmosAutoencoder, build_cosmos_family
from tokbench.tokenizers.public.keymap import KeyMap, load_converted
from tokbench.tokenizers.public.release import Release, public_factory, resolve_options

ENCODER_FILE, DECODER_FILE, AUTOENCODER_FILE = "encoder.jit", "decoder.jit", "autoencoder.jit"
PREPROCESSING = ("none fixed by the release (image_lib zero-pads to a multiple of 16, centred, and runs in bfloat16); "
                 "inputs 2x - 1, outputs clamped to [-1, 1] then (y + 1) / 2")
HAAR_TAP = 1 / math.sqrt(2)
_COMMON = dict(ch=128, ch_mult=(2, 4, 4), num_res_blocks=2, patch_size=4)
RELEASES: dict[str, dict[str, Any]] = {
    "cosmos-ci8x8": dict(_COMMON, spatial_compression=8, z_channels=16, latent_channels=16),
    "cosmos-ci16x16": dict(_COMMON, spatial_compression=16, z_channels=16, latent_channels=16),
    "cosmos-di8x8": dict(_COMMON, spatial_compression=8, z_channels=256, levels=RELEASE_LEVELS),
    "cosmos-di16x16": dict(_COMMON, spatial_compression=16, z_channels=256, levels=RELEASE_LEVELS),
}
_DERIVED_BUFFERS = ("encoder.patcher.wavelets", "encoder.patcher._arange", "decoder.unpatcher.wavelets",
                    "decoder.unpatcher._arange", "quantizer._levels", "quantizer._basis", "quantizer.implicit_codebook")
_OWN_BUFFERS = ("quantize.step", "quantize.last_hit_step", "quantize.hit_ema")


def release_archives(weights: Path) -> list[Path]:
    """The archives to read: a folder's encoder.jit + decoder.jit (else its autoencoder.jit), or the file given."""
    if weights.is_dir():
        pair = [weights / ENCODER_FILE, weights / DECODER_FILE]
        if all(p.is_file() for p in pair):
            return pair
        if (weights / AUTOENCODER_FILE).is_file():
            return [weights / AUTOENCODER_FILE]
        raise CheckpointError(f"{weights}: expected Cosmos's {ENCODER_FILE} + {DECODER_FILE} or {AUTOENCODER_FILE}")
    if not weights.is_file():
        raise CheckpointError(f"{weights}: no such file or directory")
    return [weights]


def read_release(weights: Path, materialize: bool = True) -> dict[str, torch.Tensor]:
    """The released tensors under the full network's names (the decoder's ``inv_quant.`` wrapper dropped)."""
    state: dict[str, torch.Tensor] = {}
    for archive in release_archives(weights):
        for key, tensor in read_torchscript_tensors(archive, materialize=materialize).items():
            key = key.removeprefix("inv_quant.")
            if key in state and materialize and not torch.equal(state[key], tensor):
                raise CheckpointError(f"{weights}: {key} differs between the encoder and decoder archives")
            state[key] = tensor
    for part in ("encoder", "decoder"):
        if not any(k.startswith(part + ".") for k in state):
            raise CheckpointError(f"{weights}: no {part} in the archive(s) read "
                                  f"({', '.join(p.name for p in release_archives(weights))}); a Cosmos image "
                                  f"tokenizer needs both ({ENCODER_FILE} + {DECODER_FILE}, or {AUTOENCODER_FILE})")
    return state


def options_from_state(state: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    """The `CosmosAutoencoder` options the tensors fix, plus ``levels`` for a DI file (``None`` when the
    tensors are shapes only, ``meta``)."""
    try:
        ch, wavelet_channels = state["encoder.conv_in.weight"].shape[:2]
        patch_size = math.isqrt(wavelet_channels // 3)
        num_levels = count_indexed(state, "encoder.down.")
        num_res_blocks = count_indexed(state, "encoder.down.0.block.")
        ch_mult = [state[f"encoder.down.{i}.block.{num_res_blocks - 1}.conv2.weight"].shape[0] // ch
                   for i in range(num_levels)]
        resampled = sum(f"encoder.down.{i}.downsample.conv.weight" in state for i in range(num_levels))
        bottleneck, z_channels = state["quant_conv.weight"].shape[:2]
        post_in = state["post_quant_conv.weight"].shape[1]
    except (KeyError, IndexError, ValueError) as err:
        raise CheckpointError(f"{source}: not the Cosmos image tokenizer layout (no {err})") from err
    if 3 * patch_size ** 2 != wavelet_channels:
        raise CheckpointError(f"{source}: encoder.conv_in takes {wavelet_channels} channels, not 3 x patch_size^2")
    if post_in != bottleneck:
        raise CheckpointError(f"{source}: quant_conv gives {bottleneck} channels but post_quant_conv takes {post_in} "
                              "(the VAE formulation, which the image releases do not use, is not supported)")
    options: dict[str, Any] = dict(
        ch=int(ch), ch_mult=ch_mult, num_res_blocks=num_res_blocks, patch_size=patch_size,
        spatial_compression=patch_size * 2 ** resampled, z_channels=int(z_channels),
        enc_attn_levels=[i for i in range(num_levels) if f"encoder.down.{i}.attn.0.q.weight" in state],
        dec_attn_levels=[i for i in range(num_levels) if f"decoder.up.{i}.attn.0.q.weight" in state])
    if "quantizer._levels" in state:
        levels = state["quantizer._levels"]
        options["levels"] = None if levels.is_meta else [int(n) for n in levels.tolist()]
    else:
        options["latent_channels"] = int(bottleneck)
    return options


def check_derived_buffers(state: dict[str, torch.Tensor], source: str) -> None:
    """The non-parameter tensors TorchScript saved: Haar taps only (no ``rearrange`` patching)."""
    for key in ("encoder.patcher.wavelets", "decoder.unpatcher.wavelets"):
        taps = state.get(key)
        if taps is not None and not torch.allclose(taps.float(), torch.full((2,), HAAR_TAP), atol=1e-2):
            raise CheckpointError(f"{source}: {key} = {taps.float().tolist()}, not the Haar taps "
                                  f"[{HAAR_TAP:.4f}, {HAAR_TAP:.4f}]; only patch_method='haar' is supported")


def keymap_for(options: dict[str, Any]) -> KeyMap:
    """Upstream's (LDM-named) tensors onto `CosmosAutoencoder`: q, k, v fused into one qkv conv."""
    km = KeyMap()
    ch_mult = tuple(options["ch_mult"])
    resampled = int(math.log2(options["spatial_compression"] // options["patch_size"]))
    for part, attn in (("encoder", options["enc_attn_levels"]), ("decoder", options["dec_attn_levels"])):
        add_autoencoder_part(km, "ldm", part, options["ch"], ch_mult, options["num_res_blocks"], set(attn),
                             resampled_levels=resampled)
    km.params("quant_conv", "quant_conv")
    km.params("post_quant_conv", "post_quant_conv")
    return km


def build(release: Release, weights: Path | None, **overrides: Any) -> CosmosAutoencoder:
    base = RELEASES[release.name]
    if weights is None:
        return build_cosmos_family(**resolve_options(release.name, base, {}, overrides))
    source = f"{weights} (as {release.name})"
    state = read_release(weights)
    from_file = options_from_state(state, source)
    if ("levels" in from_file) != ("levels" in base):
        found = "a discrete (FSQ)" if "levels" in from_file else "a continuous"
        raise CheckpointError(f"{source}: holds {found} tokenizer; {release.name} is "
                              f"{'discrete' if 'levels' in base else 'continuous'}")
    if from_file["spatial_compression"] != base["spatial_compression"]:
        sc = from_file["spatial_compression"]
        other = [n for n, r in RELEASES.items()
                 if r["spatial_compression"] == sc and ("levels" in r) == ("levels" in base)]
        raise CheckpointError(f"{source}: the archives hold the {sc}x{sc} tokenizer, {release.name} is "
                              f"{base['spatial_compression']}x{base['spatial_compression']}"
                              + (f"; load it as {other[0]}" if other else ""))
    check_derived_buffers(state, source)
    options = resolve_options(release.name, base, from_file, overrides, source=str(weights))
    try:
        model = build_cosmos_family(**options)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: {err}") from err
    params = {k: v.float() for k, v in state.items() if k not in _DERIVED_BUFFERS}
    load_converted(model, keymap_for(options).apply(params, source), source, own_buffers=_OWN_BUFFERS)
    return model.eval()


def _recognizes(name: str):
    base = RELEASES[name]

    def recognizes(path: Path) -> bool:
        names = (ENCODER_FILE, DECODER_FILE, AUTOENCODER_FILE)
        if path.is_dir():
            if not any((path / n).is_file() for n in names):
                return False
        elif not is_torchscript_archive(path):  # ``.jit`` as released, or a ``.pt`` of torch.jit.save
            return False
        try:
            options = options_from_state(read_release(path, materialize=False), str(path))
        except CheckpointError:
            return False
        same_kind = ("levels" in options) == ("levels" in base)
        return same_kind and options["spatial_compression"] == base["spatial_compression"]
    return recognizes


def _factory(name: str, hf_name: str):
    kind = "FSQ (8,8,8,5,5,5), 64,000 codes" if "levels" in RELEASES[name] else "16-channel continuous latents"
    return public_factory(
        Release(name, "cosmos", f"{ENCODER_FILE} + {DECODER_FILE} (or {AUTOENCODER_FILE}), TorchScript; tensors read, "
                f"never run ({kind})", f"huggingface.co/nvidia/{hf_name}; github.com/NVIDIA/Cosmos-Tokenizer",
                PREPROCESSING),
        build, _recognizes(name))


build_ci8x8 = _factory("cosmos-ci8x8", "Cosmos-0.1-Tokenizer-CI8x8")
build_ci16x16 = _factory("cosmos-ci16x16", "Cosmos-0.1-Tokenizer-CI16x16")
build_di8x8 = _factory("cosmos-di8x8", "Cosmos-0.1-Tokenizer-DI8x8")
build_di16x16 = _factory("cosmos-di16x16", "Cosmos-0.1-Tokenizer-DI16x16")
