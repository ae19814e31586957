"""Deep Compression Autoencoder (DC-AE, "Deep Compression Autoencoder for Efficient High-Resolution
Diffusion Models", MIT HAN lab; SANA's VAE) as a tokbench tokenizer: ``dc_ae`` family.

A deterministic f32/f64/f128 autoencoder. Each stage is a stack of ResBlocks (conv, act, conv,
norm, + residual) or EfficientViT blocks (multi-scale ReLU linear attention, then a gated
MBConv), joined by space-to-channel down/up blocks whose shortcut averages (encoder) or repeats
(decoder) channels, so the stages learn residuals over a parameter-free resampling. Norms act
over channels (RMSNorm with a bias, or BatchNorm in some released decoders).

Sizes follow the diffusers ``AutoencoderDC`` config, one entry per stage; stage 0 may have no
blocks, then the input conv itself downsamples (and the output conv upsamples).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tokbench.nn.family import from_model_range, to_model_range
from tokbench.tokenizer import AutoencoderOutput, Tokenizer
from tokbench.tokens import TokenLayout, Tokens

BLOCK_TYPES = ("ResBlock", "EfficientViTBlock")
NORMS = ("rms_norm", "batch_norm")
ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "relu6": nn.ReLU6, "gelu": nn.GELU}
NORM_EPS = 1e-5
ATTN_EPS = 1e-15  # the linear attention's denominator guard


class ChannelRMSNorm(nn.Module):
    """RMSNorm over the channels of ``(B, C, H, W)``, with a weight and a bias."""

    def __init__(self, channels: int, eps: float = NORM_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        x_BHWC = x_BCHW.movedim(1, -1)
        y_BHWC = F.rms_norm(x_BHWC.float(), (x_BHWC.shape[-1],), self.weight.float(), self.eps) + self.bias
        return y_BHWC.to(x_BCHW.dtype).movedim(-1, 1)


def channel_norm(kind: str, channels: int) -> nn.Module:
    return ChannelRMSNorm(channels) if kind == "rms_norm" else nn.BatchNorm2d(channels, eps=NORM_EPS)


class ResBlock(nn.Module):
    def __init__(self, channels: int, norm: str, act: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.act = ACTIVATIONS[act]()
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.norm = channel_norm(norm, channels)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return x_BCHW + self.norm(self.conv2(self.act(self.conv1(x_BCHW))))


class MultiScaleProjection(nn.Module):
    """Aggregates q, k, v over a k x k neighbourhood: depthwise conv, then a 1x1 conv per head group."""

    def __init__(self, channels: int, groups: int, kernel_size: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False)
        self.grouped = nn.Conv2d(channels, channels, 1, groups=groups, bias=False)

    def forward(self, qkv_BCHW: torch.Tensor) -> torch.Tensor:
        return self.grouped(self.depthwise(qkv_BCHW))


class MultiScaleLinearAttention(nn.Module):
    """ReLU linear attention over q, k, v and their multi-scale aggregates; output proj, norm, residual.

    The channels of ``[qkv, *aggregates]`` are cut into consecutive groups of ``3 * head_dim``, each
    split into its q, k and v (the upstream layout, which the weights assume). Maps with at most
    ``head_dim`` positions use the quadratic form, as upstream does.
    """

    def __init__(self, channels: int, head_dim: int, kernel_sizes: tuple[int, ...], norm: str) -> None:
        super().__init__()
        heads = channels // head_dim
        inner = heads * head_dim
        self.head_dim = head_dim
        self.qkv = nn.Conv2d(channels, 3 * inner, 1, bias=False)
        self.scales = nn.ModuleList(MultiScaleProjection(3 * inner, 3 * heads, k) for k in kernel_sizes)
        self.proj = nn.Conv2d(inner * (1 + len(kernel_sizes)), channels, 1, bias=False)
        self.norm = channel_norm(norm, channels)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x_BCHW.shape
        qkv_BCHW = self.qkv(x_BCHW)
        qkv_BCHW = torch.cat([qkv_BCHW, *(s(qkv_BCHW) for s in self.scales)], dim=1)
        qkv_BG3DN = qkv_BCHW.reshape(B, -1, 3 * self.head_dim, H * W)
        q_BGDN, k_BGDN, v_BGDN = qkv_BG3DN.chunk(3, dim=2)
        q_BGDN, k_BGDN = F.relu(q_BGDN), F.relu(k_BGDN)
        if H * W > self.head_dim:
            out_BGDN = self._linear(q_BGDN.float(), k_BGDN.float(), v_BGDN.float()).to(x_BCHW.dtype)
        else:
            out_BGDN = self._quadratic(q_BGDN, k_BGDN, v_BGDN)
        out_BCHW = self.proj(out_BGDN.reshape(B, -1, H, W))
        return x_BCHW + self.norm(out_BCHW)

    @staticmethod
    def _linear(q_BGDN: torch.Tensor, k_BGDN: torch.Tensor, v_BGDN: torch.Tensor) -> torch.Tensor:
        # A row of ones appended to v yields the normaliser sum_n k_n . q in the same products.
        v_BGEN = F.pad(v_BGDN, (0, 0, 0, 1), value=1.0)
        out_BGEN = (v_BGEN @ k_BGDN.transpose(-1, -2)) @ q_BGDN
        return out_BGEN[:, :, :-1] / (out_BGEN[:, :, -1:] + ATTN_EPS)

    @staticmethod
    def _quadratic(q_BGDN: torch.Tensor, k_BGDN: torch.Tensor, v_BGDN: torch.Tensor) -> torch.Tensor:
        scores_BGNN = (k_BGDN.transpose(-1, -2) @ q_BGDN).float()
        scores_BGNN = scores_BGNN / (scores_BGNN.sum(dim=2, keepdim=True) + ATTN_EPS)
        return v_BGDN @ scores_BGNN.to(v_BGDN.dtype)


class GatedMBConv(nn.Module):
    """1x1 expand (x4, doubled for the gate), SiLU, 3x3 depthwise, SiLU gate, 1x1 project, RMSNorm, residual."""

    def __init__(self, channels: int, expand: int = 4) -> None:
        super().__init__()
        hidden = expand * channels
        self.expand = nn.Conv2d(channels, 2 * hidden, 1)
        self.depthwise = nn.Conv2d(2 * hidden, 2 * hidden, 3, 1, 1, groups=2 * hidden)
        self.project = nn.Conv2d(hidden, channels, 1, bias=False)
        self.norm = ChannelRMSNorm(channels)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        h_BCHW, gate_BCHW = self.depthwise(F.silu(self.expand(x_BCHW))).chunk(2, dim=1)
        return x_BCHW + self.norm(self.project(h_BCHW * F.silu(gate_BCHW)))


class EfficientViTBlock(nn.Module):
    def __init__(self, channels: int, head_dim: int, kernel_sizes: tuple[int, ...], norm: str) -> None:
        super().__init__()
        self.attn = MultiScaleLinearAttention(channels, head_dim, kernel_sizes, norm)
        self.mlp = GatedMBConv(channels)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attn(x_BCHW))


class Downsample(nn.Module):
    """/2: a strided 3x3 conv (``conv``) or a conv then space-to-depth (``pixel_unshuffle``);
    plus, with ``shortcut``, space-to-depth averaged over channel groups."""

    def __init__(self, c_in: int, c_out: int, mode: str, shortcut: bool) -> None:
        super().__init__()
        self.unshuffle, self.shortcut = mode == "pixel_unshuffle", shortcut
        self.group = c_in * 4 // c_out
        self.conv = nn.Conv2d(c_in, c_out // 4 if self.unshuffle else c_out, 3, 1 if self.unshuffle else 2, 1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        y = self.conv(x_BCHW)
        if self.unshuffle:
            y = F.pixel_unshuffle(y, 2)
        if self.shortcut:
            y = y + F.pixel_unshuffle(x_BCHW, 2).unflatten(1, (-1, self.group)).mean(dim=2)
        return y


class Upsample(nn.Module):
    """x2: nearest interpolation then a 3x3 conv (``interpolate``) or a conv then depth-to-space
    (``pixel_shuffle``); plus, with ``shortcut``, channels repeated then depth-to-space."""

    def __init__(self, c_in: int, c_out: int, mode: str, shortcut: bool) -> None:
        super().__init__()
        self.interpolate, self.shortcut = mode == "interpolate", shortcut
        self.repeats = c_out * 4 // c_in
        self.conv = nn.Conv2d(c_in, c_out if self.interpolate else 4 * c_out, 3, 1, 1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        if self.interpolate:
            y = self.conv(F.interpolate(x_BCHW, scale_factor=2, mode="nearest"))
        else:
            y = F.pixel_shuffle(self.conv(x_BCHW), 2)
        if self.shortcut:
            y = y + F.pixel_shuffle(x_BCHW.repeat_interleave(self.repeats, dim=1), 2)
        return y


def _block(kind: str, channels: int, head_dim: int, kernel_sizes: tuple[int, ...], norm: str, act: str) -> nn.Module:
    if kind == "ResBlock":
        return ResBlock(channels, norm, act)
    return EfficientViTBlock(channels, head_dim, tuple(kernel_sizes), norm)


class DCEncoder(nn.Module):
    def __init__(self, widths: list[int], depths: list[int], kinds: list[str], scales: list[list[int]],
                 head_dim: int, latent_channels: int, downsample: str, out_shortcut: bool) -> None:
        super().__init__()
        n = len(widths)
        self.conv_in = nn.Conv2d(3, widths[0], 3, 1, 1) if depths[0] > 0 \
            else Downsample(3, widths[1], downsample, shortcut=False)
        self.stages = nn.ModuleList()
        for i in range(n):
            blocks = [_block(kinds[i], widths[i], head_dim, scales[i], "rms_norm", "silu") for _ in range(depths[i])]
            if i < n - 1 and depths[i] > 0:
                blocks.append(Downsample(widths[i], widths[i + 1], downsample, shortcut=True))
            self.stages.append(nn.Sequential(*blocks))
        self.conv_out = nn.Conv2d(widths[-1], latent_channels, 3, 1, 1)
        self.out_group = widths[-1] // latent_channels if out_shortcut else 0

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x_B3HW)
        for stage in self.stages:
            h = stage(h)
        z = self.conv_out(h)
        if self.out_group:
            z = z + h.unflatten(1, (-1, self.out_group)).mean(dim=2)
        return z


class DCDecoder(nn.Module):
    def __init__(self, widths: list[int], depths: list[int], kinds: list[str], scales: list[list[int]],
                 head_dim: int, latent_channels: int, upsample: str, in_shortcut: bool, norms: list[str],
                 acts: list[str], out_act: str) -> None:
        super().__init__()
        n = len(widths)
        self.conv_in = nn.Conv2d(latent_channels, widths[-1], 3, 1, 1)
        self.in_repeats = widths[-1] // latent_channels if in_shortcut else 0
        # stages[i] runs at stage i's resolution; they execute from the last (coarsest) to the first.
        self.stages = nn.ModuleList()
        for i in range(n):
            blocks: list[nn.Module] = []
            if i < n - 1 and depths[i] > 0:
                blocks.append(Upsample(widths[i + 1], widths[i], upsample, shortcut=True))
            blocks += [_block(kinds[i], widths[i], head_dim, scales[i], norms[i], acts[i]) for _ in range(depths[i])]
            self.stages.append(nn.Sequential(*blocks))
        channels = widths[0] if depths[0] > 0 else widths[1]
        self.norm_out = ChannelRMSNorm(channels)
        self.act_out = ACTIVATIONS[out_act]()
        self.conv_out = nn.Conv2d(channels, 3, 3, 1, 1) if depths[0] > 0 \
            else Upsample(channels, 3, upsample, shortcut=False)

    def forward(self, z_BChw: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z_BChw)
        if self.in_repeats:
            h = h + z_BChw.repeat_interleave(self.in_repeats, dim=1)
        for stage in reversed(self.stages):
            h = stage(h)
        return self.conv_out(self.act_out(self.norm_out(h)))


def _per_stage(value: Any, n: int) -> list:
    return [value] * n if isinstance(value, str) else list(value)


class DCAETokenizer(Tokenizer):
    """Images -> ``(B, latent_channels, H/2^(n-1), W/2^(n-1))`` latents (deterministic, not scaled).

    Options are the diffusers ``AutoencoderDC`` config's, one value per stage (a single string
    for every stage is accepted where diffusers accepts it); the defaults are SANA 1.0's f32c32.
    """

    family, kind = "dc_ae", "continuous"

    def __init__(self, latent_channels: int = 32, attention_head_dim: int = 32,
                 encoder_block_types: list[str] | str = ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
                 decoder_block_types: list[str] | str = ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
                 encoder_block_out_channels: list[int] = (128, 256, 512, 512, 1024, 1024),
                 decoder_block_out_channels: list[int] = (128, 256, 512, 512, 1024, 1024),
                 encoder_layers_per_block: list[int] = (2, 2, 2, 3, 3, 3),
                 decoder_layers_per_block: list[int] = (3, 3, 3, 3, 3, 3),
                 encoder_qkv_multiscales: list[list[int]] = ((), (), (), (5,), (5,), (5,)),
                 decoder_qkv_multiscales: list[list[int]] = ((), (), (), (5,), (5,), (5,)),
                 upsample_block_type: str = "interpolate", downsample_block_type: str = "Conv",
                 decoder_norm_types: list[str] | str = "rms_norm", decoder_act_fns: list[str] | str = "silu",
                 encoder_out_shortcut: bool = True, decoder_in_shortcut: bool = True,
                 decoder_conv_act_fn: str = "relu") -> None:
        super().__init__()
        n = len(encoder_block_out_channels)
        enc = dict(widths=[int(c) for c in encoder_block_out_channels], depths=[int(d) for d in encoder_layers_per_block],
                   kinds=_per_stage(encoder_block_types, n), scales=[[int(k) for k in s] for s in encoder_qkv_multiscales])
        dec = dict(widths=[int(c) for c in decoder_block_out_channels], depths=[int(d) for d in decoder_layers_per_block],
                   kinds=_per_stage(decoder_block_types, n), scales=[[int(k) for k in s] for s in decoder_qkv_multiscales],
                   norms=_per_stage(decoder_norm_types, n), acts=_per_stage(decoder_act_fns, n))
        _check(enc, dec, n, upsample_block_type, downsample_block_type, [decoder_conv_act_fn])
        self.config = dict(
            latent_channels=latent_channels, attention_head_dim=attention_head_dim, encoder_block_types=enc["kinds"],
            decoder_block_types=dec["kinds"], encoder_block_out_channels=enc["widths"],
            decoder_block_out_channels=dec["widths"], encoder_layers_per_block=enc["depths"],
            decoder_layers_per_block=dec["depths"], encoder_qkv_multiscales=enc["scales"],
            decoder_qkv_multiscales=dec["scales"], upsample_block_type=upsample_block_type,
            downsample_block_type=downsample_block_type, decoder_norm_types=dec["norms"], decoder_act_fns=dec["acts"],
            encoder_out_shortcut=bool(encoder_out_shortcut), decoder_in_shortcut=bool(decoder_in_shortcut),
            decoder_conv_act_fn=decoder_conv_act_fn)
        self.stride, self.latent_channels = 2 ** (n - 1), latent_channels
        self.encoder = DCEncoder(**enc, head_dim=attention_head_dim, latent_channels=latent_channels,
                                 downsample=downsample_block_type, out_shortcut=encoder_out_shortcut)
        self.decoder = DCDecoder(**dec, head_dim=attention_head_dim, latent_channels=latent_channels,
                                 upsample=upsample_block_type, in_shortcut=decoder_in_shortcut, out_act=decoder_conv_act_fn)

    def layout_for(self, height: int, width: int) -> TokenLayout:
        return TokenLayout("grid", (height // self.stride, width // self.stride), latent_channels=self.latent_channels)

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        return Tokens(self.layout_for(*x_B3HW.shape[-2:]), latents=self.encoder(to_model_range(x_B3HW)))

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        return from_model_range(self.decoder(tokens.latents))

    def autoencode(self, x_B3HW: torch.Tensor) -> AutoencoderOutput:
        """A plain autoencoder: no regularisation term (DC-AE trains with reconstruction losses only)."""
        return AutoencoderOutput(from_model_range(self.decoder(self.encoder(to_model_range(x_B3HW)))), {}, {})

    def last_layer(self) -> torch.Tensor:
        conv_out = self.decoder.conv_out
        return (conv_out.conv if isinstance(conv_out, Upsample) else conv_out).weight


def _check(enc: dict, dec: dict, n: int, upsample: str, downsample: str, acts: list[str]) -> None:
    """One-line ValueErrors for configs this implementation does not build."""
    for side, parts in (("encoder", enc), ("decoder", dec)):
        lengths = {k: len(v) for k, v in parts.items()}
        if set(lengths.values()) != {n}:
            raise ValueError(f"dc_ae: every {side} per-stage option needs {n} entries, got {lengths}")
        if any(d == 0 for d in parts["depths"][1:]):
            raise ValueError(f"dc_ae: only the first {side} stage may have no blocks, got {parts['depths']}")
        if bad := sorted(set(parts["kinds"]) - set(BLOCK_TYPES)):
            raise ValueError(f"dc_ae: {side} block types {bad} not supported; expected {BLOCK_TYPES}")
    if bad := sorted(set(dec["norms"]) - set(NORMS)):
        raise ValueError(f"dc_ae: decoder norm types {bad} not supported; expected {NORMS}")
    if bad := sorted(set(dec["acts"] + acts) - set(ACTIVATIONS)):
        raise ValueError(f"dc_ae: activations {bad} not supported; expected {sorted(ACTIVATIONS)}")
    if upsample not in ("interpolate", "pixel_shuffle"):
        raise ValueError(f"dc_ae: upsample_block_type {upsample!r}; expected 'interpolate' or 'pixel_shuffle'")
    if downsample not in ("Conv", "pixel_unshuffle"):
        raise ValueError(f"dc_ae: downsample_block_type {downsample!r}; expected 'Conv' or 'pixel_unshuffle'")
