"""FlowMo (kylesargent/FlowMo): a transformer encoder to LFQ bits, and a rectified-flow
transformer decoder sampled from noise -- a tokbench `Tokenizer` of its own.

Both halves are the same FLUX-style transformer of "double-stream" blocks: an image stream
(patches of ``patch_size``) and a text stream (``code_length`` tokens) that attend jointly,
with RoPE over 3 position axes (a token's index on all three axes; a patch's ``(0, row, col)``)
and muP's attention scale ``8 / head_dim``. The encoder runs without a timestep (its
modulations are the identity) on a zero text stream, whose output is the code
``(B, code_length, context_dim)``. The decoder predicts the flow velocity of a noisy image,
modulated by the timestep and conditioned on the code plus a constant 1 channel (all zeros
for the unconditional pass of classifier-free guidance).

Ids: the code's ``context_dim`` channels are read as ``bits`` groups of ``context_dim / bits``
(channel ``g * fh + j`` is bit ``g`` of sub-token ``j``, ``fh = context_dim / bits``), and each
sub-token is an LFQ id of ``bits`` bits, ``id = sum_g [code > 0] * 2**g`` (bit 0 the least
significant, zero negative), in the order ``(token, sub-token)``: upstream's ``_quantize`` and
``LFQ`` indices exactly. FlowMo-Lo: 256 tokens x 18 channels = 512 ids of 9 bits; FlowMo-Hi:
256 x 56 = 1,024 ids of 14 bits.

Decoding integrates the flow from ``t = 1`` (noise) to ``t = 0`` with Euler steps, as upstream's
``rf_sample`` (see `FlowMoTokenizer`). Module names follow the release, so its state dict loads
as it is.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tokbench.quantize import LookupFreeQuantizer
from tokbench.tokenizer import Tokenizer
from tokbench.tokens import TokenLayout, Tokens

TIME_DIM = 256  # sinusoidal timestep features
LN_EPS = 1e-6


def edm_to_flow_time(sigma: float) -> float:
    """An EDM noise level ``sigma`` (``x + sigma * n``) as a rectified-flow time ``sigma / (1 + sigma)``."""
    return sigma / (1 + sigma)


def sampling_times(steps: int, schedule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 times ``t_i`` (from 1 down, ``steps`` of them) and Euler step sizes ``dt_i``.

    ``linear``: ``t_i = (steps - i) / steps``; ``pow_P``: ``t_i = ((steps - i) / steps) ** (1 / P)``
    (``pow_0.25`` is ``((steps - i) / steps) ** 4``: small steps near the data), computed in
    float32 as upstream does, so every ``t`` matches its bits.
    """
    if schedule == "linear":
        t = torch.arange(1, steps + 1).flip(0) / steps
        return t, torch.ones_like(t) * (1.0 / steps)
    power = 1 / float(schedule.split("_", 1)[1])
    t = torch.arange(0, steps + 1).flip(0) ** power / steps ** power
    return t[:-1], t[:-1] - t[1:]


def parse_schedule(schedule: str) -> str:
    """``schedule`` if it is ``linear`` or ``pow_P`` with ``P > 0``, else a `ValueError`."""
    if schedule != "linear":
        head, _, power = str(schedule).partition("_")
        try:
            ok = head == "pow" and float(power) > 0
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"schedule must be 'linear' or 'pow_P' with P > 0 (the release: 'pow_0.25'), "
                             f"got {schedule!r}")
    return schedule


def rope_angles(pos_LA: torch.Tensor, axes_dim: tuple[int, ...], theta: float) -> torch.Tensor:
    """Rotation matrices ``(L, head_dim / 2, 2, 2)`` for positions ``(L, n_axes)``: axis ``a`` takes
    ``axes_dim[a] / 2`` frequencies ``theta ** (-2k / axes_dim[a])`` (angles in float64, as upstream)."""
    blocks = []
    for a, dim in enumerate(axes_dim):
        omega = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=pos_LA.device) / dim)
        ang = pos_LA[:, a].double()[:, None] * omega
        cos, sin = ang.cos(), ang.sin()
        blocks.append(torch.stack([cos, -sin, sin, cos], dim=-1).reshape(*ang.shape, 2, 2))
    return torch.cat(blocks, dim=-3).float()


def apply_rope(x_BHLD: torch.Tensor, rot_LK22: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs ``(x_2k, x_2k+1)`` by the angles of ``rot`` (in float32)."""
    pairs = x_BHLD.float().reshape(*x_BHLD.shape[:-1], -1, 1, 2)
    out = rot_LK22[..., 0] * pairs[..., 0] + rot_LK22[..., 1] * pairs[..., 1]
    return out.reshape(x_BHLD.shape).type_as(x_BHLD)


def timestep_features(t_B: torch.Tensor, dim: int = TIME_DIM, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features ``[cos, sin]`` of ``1000 t`` (FLUX's timestep embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(t_B.device)
    args = (1000.0 * t_B)[:, None].float() * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1).to(t_B)


class MLPEmbedder(nn.Module):
    def __init__(self, in_dim: int, width: int) -> None:
        super().__init__()
        self.in_layer, self.out_layer = nn.Linear(in_dim, width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(F.silu(self.in_layer(x)))


class RMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype) * self.scale


class QKNorm(nn.Module):
    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.query_norm, self.key_norm = RMSNorm(head_dim), RMSNorm(head_dim)


class Attention(nn.Module):
    """The projections of one stream (upstream's ``SelfAttention``; attention itself is joint)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.norm = QKNorm(width // heads)
        self.proj = nn.Linear(width, width)

    def qkv_heads(self, x_BLC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, L, C = x_BLC.shape
        q, k, v = self.qkv(x_BLC).reshape(B, L, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        return self.norm.query_norm(q).to(v), self.norm.key_norm(k).to(v), v


class Modulation(nn.Module):
    """``silu(vec)`` -> (shift, scale, gate) for the attention and the MLP of one stream."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.lin = nn.Linear(width, 6 * width)

    def forward(self, vec_BC: torch.Tensor | None) -> tuple[Any, ...]:
        if vec_BC is None:  # the encoder: no timestep, every modulation the identity
            return (0.0, 0.0, 1.0) * 2
        return self.lin(F.silu(vec_BC))[:, None, :].chunk(6, dim=-1)


def _mlp(width: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))


def _ln(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=LN_EPS)


class DoubleStreamBlock(nn.Module):
    """Image and text streams with their own weights, one joint attention (text first)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.img_mod, self.txt_mod = Modulation(width), Modulation(width)
        self.img_attn, self.txt_attn = Attention(width, heads), Attention(width, heads)
        self.img_mlp, self.txt_mlp = _mlp(width, hidden), _mlp(width, hidden)

    def forward(self, img_BIC: torch.Tensor, txt_BTC: torch.Tensor, vec_BC: torch.Tensor | None,
                rot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i_shift1, i_scale1, i_gate1, i_shift2, i_scale2, i_gate2 = self.img_mod(vec_BC)
        t_shift1, t_scale1, t_gate1, t_shift2, t_scale2, t_gate2 = self.txt_mod(vec_BC)
        iq, ik, iv = self.img_attn.qkv_heads((1 + i_scale1) * _ln(img_BIC) + i_shift1)
        tq, tk, tv = self.txt_attn.qkv_heads((1 + t_scale1) * _ln(txt_BTC) + t_shift1)
        q, k, v = torch.cat([tq, iq], dim=2), torch.cat([tk, ik], dim=2), torch.cat([tv, iv], dim=2)
        q, k = apply_rope(q, rot), apply_rope(k, rot)
        out = F.scaled_dot_product_attention(q, k, v, scale=8.0 / q.shape[-1])  # muP: 1/d, times 8
        out_BLC = out.transpose(1, 2).flatten(2)
        T = txt_BTC.shape[1]
        img_BIC = img_BIC + i_gate1 * self.img_attn.proj(out_BLC[:, T:])
        img_BIC = img_BIC + i_gate2 * self.img_mlp((1 + i_scale2) * _ln(img_BIC) + i_shift2)
        txt_BTC = txt_BTC + t_gate1 * self.txt_attn.proj(out_BLC[:, :T])
        txt_BTC = txt_BTC + t_gate2 * self.txt_mlp((1 + t_scale2) * _ln(txt_BTC) + t_shift2)
        return img_BIC, txt_BTC


class LastLayer(nn.Module):
    """Layer norm, modulated by the timestep, then a linear readout (muP's ``MuReadout`` at
    width multiplier 1 is a plain linear). As released, the modulated features are layer-normed
    a second time before the readout."""

    def __init__(self, width: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x_BLC: torch.Tensor, vec_BC: torch.Tensor | None) -> torch.Tensor:
        if vec_BC is not None:
            shift, scale = self.adaLN_modulation(vec_BC).chunk(2, dim=1)
            x_BLC = (1 + scale[:, None, :]) * _ln(x_BLC) + shift[:, None, :]
        return self.linear(_ln(x_BLC))


class FlowTransformer(nn.Module):
    """Patches ``(B, 3, H, W)`` and text tokens ``(B, T, context_dim)`` through double-stream blocks."""

    def __init__(self, patch_size: int, context_dim: int, width: int, depth: int, heads: int,
                 axes_dim: tuple[int, ...], mlp_ratio: float, theta: float = 10_000) -> None:
        super().__init__()
        self.patch_size, self.axes_dim, self.theta = patch_size, tuple(axes_dim), theta
        patch_dim = 3 * patch_size ** 2
        self.time_in = MLPEmbedder(TIME_DIM, width)
        self.img_in = nn.Linear(patch_dim, width)
        self.txt_in = nn.Linear(context_dim, width)
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(width, heads, mlp_ratio) for _ in range(depth))
        self.final_layer_img = LastLayer(width, patch_dim)
        self.final_layer_txt = LastLayer(width, context_dim)

    def positions(self, T: int, gh: int, gw: int, device: torch.device) -> torch.Tensor:
        """Rotations for ``T`` text tokens (index on every axis), then the ``gh x gw`` patches ``(0, row, col)``."""
        txt = torch.arange(T, device=device, dtype=torch.float32)[:, None].expand(T, 3)
        rows, cols = torch.meshgrid(torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij")
        img = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3).float()
        return rope_angles(torch.cat([txt, img]), self.axes_dim, self.theta)

    def forward(self, x_B3HW: torch.Tensor, txt_BTC: torch.Tensor, t_B: torch.Tensor | None,
                readout: str) -> torch.Tensor:
        """The image stream's output ``(B, 3, H, W)`` (``readout="img"``) or the text stream's."""
        B, _, H, W = x_B3HW.shape
        p = self.patch_size
        gh, gw = H // p, W // p
        patches = x_B3HW.reshape(B, 3, gh, p, gw, p).permute(0, 2, 4, 3, 5, 1).reshape(B, gh * gw, -1)
        img, txt = self.img_in(patches), self.txt_in(txt_BTC)
        vec = None if t_B is None else self.time_in(timestep_features(t_B))
        rot = self.positions(txt.shape[1], gh, gw, x_B3HW.device)
        for block in self.double_blocks:
            img, txt = block(img, txt, vec, rot)
        if readout == "txt":
            return self.final_layer_txt(txt, vec)
        out = self.final_layer_img(img, vec)  # (B, gh*gw, p*p*3), channels ordered (row, col, rgb)
        return out.reshape(B, gh, gw, p, p, 3).permute(0, 5, 1, 3, 2, 4).reshape(B, 3, H, W)


class FlowMoTokenizer(Tokenizer):
    """FlowMo: images -> ``code_length * context_dim / bits`` LFQ ids of ``bits`` bits -> images
    sampled by the flow decoder.

    Sampler (upstream's ``FlowMo.reconstruct`` / ``rf_sample``, ``eval.sampling`` of
    ``base.yaml`` by default): start from noise ``z ~ N(0, I)`` of the image's (padded) shape,
    ``sample_steps`` Euler steps ``z <- z - dt * v`` at the times of ``schedule`` (`sampling_times`),
    ``v = v_u + cfg * (v_c - v_u)`` (classifier-free guidance against the all-zero code) at the
    steps whose time lies in ``cfg_interval`` (EDM noise levels, `edm_to_flow_time`; ``None``: every
    step), ``v = v_c`` elsewhere and when ``cfg == 1``; the result is clipped to ``[-1, 1]``.

    Noise: ``decode(tokens, noise=...)`` starts from the given ``(B, 3, H_pad, W_pad)`` tensor;
    else it is ``torch.randn((B, 3, H_pad, W_pad), generator=...)`` from the given CPU generator,
    else from one seeded with ``seed`` at each call -- what upstream draws after
    ``torch.manual_seed(seed)`` -- so a decode is deterministic, and image ``i``'s noise depends on
    its position ``i`` in the batch (as upstream's). Computed in the model's dtype (upstream
    evaluates under bf16 autocast on GPUs).
    """

    family, kind = "flowmo", "discrete"

    def __init__(self, patch_size: int = 4, code_length: int = 256, context_dim: int = 18, bits: int = 9,
                 enc_width: int = 768, enc_depth: int = 8, enc_heads: int = 12,
                 enc_axes: tuple[int, ...] = (8, 28, 28), dec_width: int = 1152, dec_depth: int = 16,
                 dec_heads: int = 12, dec_axes: tuple[int, ...] = (12, 42, 42), mlp_ratio: float = 4.0,
                 sample_steps: int = 25, schedule: str = "pow_0.25", cfg: float = 1.5,
                 cfg_interval: tuple[float, float] | None = (0.17, 1.02), seed: int = 0) -> None:
        super().__init__()
        if context_dim % bits:
            raise ValueError(f"context_dim={context_dim} must be a multiple of bits={bits} (each token's channels "
                             "are bits groups of sub-token channels)")
        for part, width, heads, axes in (("enc", enc_width, enc_heads, enc_axes),
                                         ("dec", dec_width, dec_heads, dec_axes)):
            if width % heads or sum(axes) != width // heads or any(a % 2 for a in axes):
                raise ValueError(f"{part}_axes={tuple(axes)} must be even sizes summing to the head dimension "
                                 f"{part}_width / {part}_heads = {width}/{heads}")
        if int(sample_steps) < 1:
            raise ValueError(f"sample_steps must be >= 1, got {sample_steps}")
        if cfg_interval is not None and (len(cfg_interval) != 2 or cfg_interval[0] > cfg_interval[1]):
            raise ValueError(f"cfg_interval must be None or (low, high) EDM noise levels, low <= high; "
                             f"got {cfg_interval}")
        self.config: dict[str, Any] = dict(
            patch_size=patch_size, code_length=code_length, context_dim=context_dim, bits=bits, enc_width=enc_width,
            enc_depth=enc_depth, enc_heads=enc_heads, enc_axes=[int(a) for a in enc_axes], dec_width=dec_width,
            dec_depth=dec_depth, dec_heads=dec_heads, dec_axes=[int(a) for a in dec_axes], mlp_ratio=mlp_ratio,
            sample_steps=int(sample_steps), schedule=parse_schedule(schedule), cfg=float(cfg),
            cfg_interval=None if cfg_interval is None else [float(c) for c in cfg_interval], seed=int(seed))
        self.stride, self.code_length, self.context_dim = patch_size, code_length, context_dim
        self.sub_tokens = context_dim // bits  # upstream's fh
        self.encoder = FlowTransformer(patch_size, context_dim, enc_width, enc_depth, enc_heads, enc_axes, mlp_ratio)
        self.decoder = FlowTransformer(patch_size, context_dim + 1, dec_width, dec_depth, dec_heads, dec_axes,
                                       mlp_ratio)
        self.quantize = LookupFreeQuantizer(bits, entropy_weight=0.0)
        self._start: tuple[torch.Tensor | None, torch.Generator | None] = (None, None)

    def layout_for(self, height: int, width: int) -> TokenLayout:
        return TokenLayout("sequence", (self.code_length * self.sub_tokens,), vocab_size=self.quantize.codebook_size)

    # -- ids <-> the code (B, code_length, context_dim) ------------------------------------------
    def code_to_bits(self, code_BTC: torch.Tensor) -> torch.Tensor:
        """``(B, T, bits * fh)`` -> ``(B, T * fh, bits)``: channel ``g * fh + j`` is bit ``g`` of sub-token ``j``."""
        B, T, _ = code_BTC.shape
        return code_BTC.reshape(B, T, -1, self.sub_tokens).transpose(2, 3).reshape(B, T * self.sub_tokens, -1)

    def bits_to_code(self, bits_BND: torch.Tensor) -> torch.Tensor:
        """``(B, T * fh, bits)`` -> ``(B, T, bits * fh)`` (the inverse of `code_to_bits`)."""
        B, N, D = bits_BND.shape
        fh = self.sub_tokens
        return bits_BND.reshape(B, N // fh, fh, D).transpose(2, 3).reshape(B, N // fh, D * fh)

    @torch.no_grad()
    def encode_code(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """The encoder's code ``(B, code_length, context_dim)`` before quantization (``x`` in ``[0, 1]``)."""
        x = x_B3HW * 2 - 1
        txt = torch.zeros(x.shape[0], self.code_length, self.context_dim, device=x.device, dtype=x.dtype)
        return self.encoder(x, txt, None, readout="txt")

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        out = self.quantize(self.code_to_bits(self.encode_code(x_B3HW)), channel_dim=-1)
        return Tokens(self.layout_for(*x_B3HW.shape[-2:]), ids=out.ids)

    # -- decoding: the flow sampler ---------------------------------------------------------------
    @torch.no_grad()
    def decode(self, tokens: Tokens, *, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """`Tokens` -> images in ``[0, 1]``, sampled from ``noise`` (or a draw from ``generator``, or
        from ``seed``; see the class docstring)."""
        self._start = (noise, generator)
        try:
            return super().decode(tokens)
        finally:
            self._start = (None, None)

    def start_noise(self, B: int, H: int, W: int) -> torch.Tensor:
        noise, generator = self._start
        if noise is not None:
            if tuple(noise.shape) != (B, 3, H, W):
                raise ValueError(f"noise must have shape (B, 3, H_pad, W_pad) = {(B, 3, H, W)}, "
                                 f"got {tuple(noise.shape)}")
            return noise.to(self.device, torch.float32)
        if generator is None:
            generator = torch.Generator().manual_seed(self.config["seed"])
        return torch.randn((B, 3, H, W), generator=generator).to(self.device)

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        bits_BND = self.quantize.lookup(tokens.ids.to(self.device), channel_dim=-1)
        code_BTC = self.bits_to_code(bits_BND)
        H, W = (-(-s // self.stride) * self.stride for s in tokens.image_size)
        z = self.start_noise(code_BTC.shape[0], H, W)
        return (self.sample(code_BTC, z) + 1) / 2

    def sample(self, code_BTC: torch.Tensor, z_B3HW: torch.Tensor) -> torch.Tensor:
        """Euler-integrate the flow from ``z`` (``t = 1``) to ``t = 0`` given the code; in ``[-1, 1]``."""
        cfg_scale, interval = self.config["cfg"], self.config["cfg_interval"]
        dtype = self.decoder.img_in.weight.dtype
        ones = torch.ones_like(code_BTC[..., :1])
        cond = torch.cat([code_BTC, ones], dim=-1).to(dtype)
        uncond = torch.zeros_like(cond) if cfg_scale != 1.0 else None
        lo, hi = (0.0, math.inf) if interval is None else (edm_to_flow_time(interval[0]), edm_to_flow_time(interval[1]))
        z = z_B3HW.to(dtype)
        for t, dt in zip(*sampling_times(self.config["sample_steps"], self.config["schedule"])):
            t_B = torch.full((z.shape[0],), float(t), device=z.device)
            v = self.decoder(z, cond, t_B, readout="img")
            if uncond is not None and lo <= float(t) <= hi:
                v_u = self.decoder(z, uncond, t_B, readout="img")
                v = v_u + cfg_scale * (v - v_u)
            z = z - dt.to(z.device) * v
        return z.clamp(-1, 1)
