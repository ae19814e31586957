"""Open-MAGVIT2 (TencentARC/SEED-Voken) -> `OpenMagvit2Tokenizer`: the ImageNet tokenizers
``imagenet_256_L.ckpt`` / ``imagenet_128_L.ckpt`` and the text-to-image pretrained
``pretrain256_262144.ckpt`` / ``pretrain256_16384.ckpt``. All four are one model class
(``improved_model`` Encoder/Decoder and ``LFQ``; ``lfqgan_pretrain.VQModel`` builds the same
modules as ``lfqgan.VQModel``); they differ in sizes only (``configs/Open-MAGVIT2/gpu/*.yaml``).

The architecture is its own (no tokbench family expresses it): an encoder of bias-free
3x3 convolutions with strided-conv downsampling and no attention; a decoder whose levels
start with an adaptive GroupNorm conditioned on the quantized map (its per-channel mean
and standard deviation through two linear layers) and upsample by conv + depth-to-space;
and LFQ codes -- tokbench's `LookupFreeQuantizer`, whose id layout (channel 0 is the
least significant bit) is the one upstream computes, whatever its docstring says.
Module and parameter names follow upstream, so the file maps by identity.

The release is a Lightning ``.ckpt``: ``state_dict`` holds the live weights and an EMA
shadow ``model_ema.<name with every dot removed>`` of every parameter. Upstream evaluates
inside ``ema_scope()``, so the EMA weights are loaded whenever the file has them; the
shadow names are mapped back through this model's own parameter names (dots cannot be
restored by string rules). ``loss.*`` (discriminator, LPIPS) and the EMA's ``decay`` /
``num_updates`` are ignored. Sizes are read off the tensors (the HF release has no
config). Images go in as ``2x - 1``; reconstructions are clamped to ``[-1, 1]`` and
mapped back (upstream's evaluation).

A released file is recognised by its sizes. ``imagenet_256_L`` and ``pretrain256_262144`` have
the same ones (only their training data differ), so such a file must be named; a file of sizes
no release has is taken as ``open-magvit2-lfq``, which reads every size off the tensors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tokbench.checkpoint import CheckpointError
from tokbench.nn.family import from_model_range, to_model_range
from tokbench.quantize import LookupFreeQuantizer
from tokbench.tokenizer import AutoencoderOutput, Tokenizer
from tokbench.tokens import TokenLayout, Tokens
from tokbench.tokenizers.public.conv_keys import encoder_sizes
from tokbench.tokenizers.public.keymap import KeyMap, load_converted
from tokbench.tokenizers.public.release import (PICKLE_SUFFIXES, Release, file_index, public_factory, read_any,
                                                resolve_options, state_dict_of, options_read_off)

EMA_PREFIX = "model_ema."
EMA_BOOKKEEPING = ("model_ema.decay", "model_ema.num_updates")
OWN_BUFFERS = ("quantize.step", "quantize.last_hit_step", "quantize.hit_ema")
_LARGE = dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=4, z_channels=18)
RELEASES = {
    # imagenet_lfqgan_256_L.yaml: f16, 18 bits = 262,144 codes, 16x16 tokens at 256 px.
    "open-magvit2-lfq": _LARGE,
    # imagenet_lfqgan_128_L.yaml: one level fewer (f8), 16x16 tokens at 128 px.
    "open-magvit2-lfq-128": dict(_LARGE, ch_mult=(1, 2, 2, 4)),
    # pretrain_lfqgan_256_{262144,16384}.yaml: f16; 18 or 14 bits.
    "open-magvit2-pretrain-262144": _LARGE,
    "open-magvit2-pretrain-16384": dict(_LARGE, z_channels=14),
}
# name: (released file, Hugging Face repository, the side of upstream's evaluation images)
FILES = {
    "open-magvit2-lfq": ("imagenet_256_L.ckpt", "TencentARC/Open-MAGVIT2-Tokenizer-256-resolution", 256),
    "open-magvit2-lfq-128": ("imagenet_128_L.ckpt", "TencentARC/Open-MAGVIT2-Tokenizer-128-resolution", 128),
    "open-magvit2-pretrain-262144": ("pretrain256_262144.ckpt", "TencentARC/Open-MAGVIT2-Tokenizer-262144-Pretrain",
                                     256),
    "open-magvit2-pretrain-16384": ("pretrain256_16384.ckpt", "TencentARC/Open-MAGVIT2-Tokenizer-16384-Pretrain", 256),
}
GENERIC = "open-magvit2-lfq"  # the name a file of other sizes loads as


def preprocessing(size: int) -> str:
    """SEED-Voken's ``ImageNetValidation`` (``evaluation_image.py --image_size``), then ``2x - 1``."""
    return (f"ImageNet validation: shorter side resized to {size} (albumentations SmallestMaxSize), "
            f"center crop {size}x{size}; then 2x - 1")


def _norm(channels: int, affine: bool = True) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=affine)


class ResBlock(nn.Module):
    """GroupNorm-swish-conv twice, bias-free convs, a 1x1 shortcut where widths change."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = _norm(in_ch), _norm(out_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1, bias=False) if in_ch != out_ch else None

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x_BChw)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (x_BChw if self.nin_shortcut is None else self.nin_shortcut(x_BChw))


class Level(nn.Module):
    """One resolution level: ``block`` (ResBlocks), then ``downsample`` / ``upsample`` or nothing."""

    def __init__(self, blocks: list[ResBlock]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)


class DepthToSpaceUp(nn.Module):
    """3x3 conv to 4x channels, then depth-to-space by 2 (DCR order: the split channel index
    is ``(row, col, c)``)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch * 4, 3, padding=1)

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x_BChw)
        B, C4, h, w = y.shape
        y = y.view(B, 2, 2, C4 // 4, h, w).permute(0, 3, 4, 1, 5, 2)
        return y.reshape(B, C4 // 4, h * 2, w * 2)


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm without affine, then scale ``gamma(std)`` and shift ``beta(mean)`` of the
    quantized map's per-channel statistics (std from the unbiased variance + eps, as upstream)."""

    def __init__(self, z_channels: int, ch: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.gn = _norm(ch, affine=False)
        self.gamma, self.beta = nn.Linear(z_channels, ch), nn.Linear(z_channels, ch)
        self.eps = eps

    def forward(self, x_BChw: torch.Tensor, zq_BZhw: torch.Tensor) -> torch.Tensor:
        flat_BZn = zq_BZhw.flatten(2)
        scale = self.gamma((flat_BZn.var(dim=-1) + self.eps).sqrt())[:, :, None, None]
        shift = self.beta(flat_BZn.mean(dim=-1))[:, :, None, None]
        return scale * self.gn(x_BChw) + shift


class Encoder(nn.Module):
    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, z_channels: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1, bias=False)
        self.down = nn.ModuleList()
        block_in = ch
        for i, mult in enumerate(ch_mult):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(block_in, ch * mult))
                block_in = ch * mult
            level = Level(blocks)
            if i < len(ch_mult) - 1:
                level.downsample = nn.Conv2d(block_in, block_in, 3, stride=2, padding=1)
            self.down.append(level)
        self.mid_block = nn.ModuleList(ResBlock(block_in, block_in) for _ in range(num_res_blocks))
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, z_channels, 1)

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x_B3HW)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        for block in self.mid_block:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, z_channels: int) -> None:
        super().__init__()
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid_block = nn.ModuleList(ResBlock(block_in, block_in) for _ in range(num_res_blocks))
        ups: list[Level] = []
        adaptive: list[AdaptiveGroupNorm] = []
        for i in reversed(range(len(ch_mult))):  # lowest resolution first; stored in level order
            adaptive.insert(0, AdaptiveGroupNorm(z_channels, block_in))
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(block_in, ch * ch_mult[i]))
                block_in = ch * ch_mult[i]
            level = Level(blocks)
            if i > 0:
                level.upsample = DepthToSpaceUp(block_in)
            ups.insert(0, level)
        self.up, self.adaptive = nn.ModuleList(ups), nn.ModuleList(adaptive)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 3, 3, padding=1)

    def forward(self, zq_BZhw: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(zq_BZhw)
        for block in self.mid_block:
            h = block(h)
        for i in reversed(range(len(self.up))):
            h = self.adaptive[i](h, zq_BZhw)
            for block in self.up[i].block:
                h = block(h)
            if i > 0:
                h = self.up[i].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class OpenMagvit2Tokenizer(Tokenizer):
    """Open-MAGVIT2: images -> an ``h x w`` grid of LFQ ids (``z_channels`` bits each,
    ``h = H / 2**(levels - 1)``). Trainable with LFQ's losses (Open-MAGVIT2's defaults)."""

    family, kind = "open_magvit2", "discrete"

    def __init__(self, ch: int = 128, ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4), num_res_blocks: int = 4,
                 z_channels: int = 18) -> None:
        super().__init__()
        ch_mult = tuple(int(m) for m in ch_mult)
        if ch % 32 or any(ch * m % 32 for m in ch_mult):
            raise ValueError(f"Open-MAGVIT2 widths must be multiples of 32 (GroupNorm(32)), got ch={ch}, "
                             f"ch_mult={list(ch_mult)}")
        self.config: dict[str, Any] = dict(ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks,
                                           z_channels=z_channels)
        self.stride = 2 ** (len(ch_mult) - 1)
        self.encoder = Encoder(ch, ch_mult, num_res_blocks, z_channels)
        self.quantize = LookupFreeQuantizer(z_channels)
        self.decoder = Decoder(ch, ch_mult, num_res_blocks, z_channels)

    def layout_for(self, height: int, width: int) -> TokenLayout:
        return TokenLayout("grid", (height // self.stride, width // self.stride), vocab_size=self.quantize.codebook_size)

    def decode_codes(self, zq_BZhw: torch.Tensor) -> torch.Tensor:
        return from_model_range(self.decoder(zq_BZhw).clamp(-1, 1))

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        idx_Bhw = self.quantize(self.encoder(to_model_range(x_B3HW))).ids
        return Tokens(self.layout_for(*x_B3HW.shape[-2:]), ids=idx_Bhw)

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        return self.decode_codes(self.quantize.lookup(tokens.ids, channel_dim=1))

    def autoencode(self, x_B3HW: torch.Tensor) -> AutoencoderOutput:
        q = self.quantize(self.encoder(to_model_range(x_B3HW)))
        return AutoencoderOutput(from_model_range(self.decoder(q.z_q)), q.losses, q.stats)

    def last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight


def infer_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Sizes read off the live tensors (KeyError if the file is not Open-MAGVIT2's layout)."""
    state["decoder.adaptive.0.gamma.weight"]  # Open-MAGVIT2's own decoder, or a KeyError
    return dict(encoder_sizes(state), z_channels=state["encoder.conv_out.weight"].shape[0])


def keymap_for(model: OpenMagvit2Tokenizer, ema: bool) -> KeyMap:
    """Every tensor by its own name, or from its EMA shadow ``model_ema.<name without dots>``."""
    km = KeyMap()
    for key in model.state_dict():
        if not key.startswith("quantize."):
            km.rename(key, EMA_PREFIX + key.replace(".", "") if ema else key)
    return km


def weights_in(state: dict[str, torch.Tensor], ema: bool) -> dict[str, torch.Tensor]:
    """The generator's tensors: the EMA shadows (``ema``) or the live ``encoder.``/``decoder.`` ones."""
    if ema:
        return {k: v for k, v in state.items() if k.startswith(EMA_PREFIX) and k not in EMA_BOOKKEEPING
                and not k.startswith(EMA_PREFIX + "loss")}
    return {k: v for k, v in state.items() if k.startswith(("encoder.", "decoder."))}


def build(release: Release, weights: Path | None, **overrides: Any) -> OpenMagvit2Tokenizer:
    base = RELEASES[release.name]
    if weights is None:
        return OpenMagvit2Tokenizer(**resolve_options(release.name, base, {}, overrides))
    if weights.is_dir():
        found = sorted(weights.glob("*.ckpt"))
        if len(found) != 1:
            raise CheckpointError(f"{weights}: expected one Open-MAGVIT2 .ckpt file in the folder, found "
                                  f"{[p.name for p in found] or 'none'}")
        weights = found[0]
    state = state_dict_of(read_any(weights), weights, ("state_dict",))
    from_file = options_read_off(infer_config, state)
    model = OpenMagvit2Tokenizer(**resolve_options(release.name, base, from_file, overrides, source=str(weights)))
    ema = any(k.startswith(EMA_PREFIX) for k in state)
    source = f"{weights} (as {release.name}{', EMA weights' if ema else ''})"
    load_converted(model, keymap_for(model, ema).apply(weights_in(state, ema), source), source, OWN_BUFFERS)
    return model.eval()


def sizes_in_file(path: Path) -> dict[str, Any] | None:
    """The sizes a released file's live tensors fix (read off its key listing), or None when it
    is not Open-MAGVIT2's layout."""
    if path.is_dir() or path.suffix not in PICKLE_SUFFIXES:
        return None
    shapes = {k.split("/", 1)[1]: torch.empty(shape, device="meta")
              for k, shape in file_index(path).items() if k.startswith("state_dict/")}
    if "encoder.conv_in.weight" not in shapes:
        return None
    return options_read_off(infer_config, shapes) or None


def _recognizer(name: str):
    def recognizes(path: Path) -> bool:
        sizes = sizes_in_file(path)
        if sizes is None:
            return False
        fits = [n for n, release in RELEASES.items() if release == sizes]
        return name in fits if fits else name == GENERIC
    return recognizes


def build_open_magvit2_family(**options: Any) -> OpenMagvit2Tokenizer:
    """The ``open_magvit2`` family: rebuilds the architecture from a tokbench checkpoint's config."""
    return OpenMagvit2Tokenizer(**options)


def _factory(name: str):
    file, repo, size = FILES[name]
    release = Release(name, "open_magvit2", file, f"huggingface.co/{repo}; github.com/TencentARC/SEED-Voken",
                      preprocessing(size))
    return public_factory(release, build, _recognizer(name))


build_lfq, build_lfq_128, build_pretrain_262144, build_pretrain_16384 = (_factory(n) for n in RELEASES)
