"""The generators' transformer block: pre-norm, causal or masked attention with an optional
KV cache and RoPE, and either a SwiGLU MLP with RMSNorm (LlamaGen's GPT) or a GELU MLP with
class-conditioned adaptive LayerNorm (VAR's AdaLN).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tokbench.generation.rope import apply_rope


@dataclass
class KVCache:
    """Keys and values of the positions seen so far, one ``(k, v)`` per block."""

    layers: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list)

    def for_layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.layers[i] if i < len(self.layers) else None

    def store(self, i: int, k_BHLD: torch.Tensor, v_BHLD: torch.Tensor) -> None:
        while len(self.layers) <= i:
            self.layers.append(None)
        self.layers[i] = (k_BHLD, v_BHLD)

    @property
    def length(self) -> int:
        return 0 if not self.layers or self.layers[0] is None else self.layers[0][0].shape[2]


class SwiGLU(nn.Module):
    """LlamaGen's MLP: ``w2(silu(w1 x) * w3 x)``, hidden width 2/3 of 4x, rounded up to 256."""

    def __init__(self, width: int, multiple_of: int = 256) -> None:
        super().__init__()
        hidden = int(2 * 4 * width / 3)
        hidden = multiple_of * -(-hidden // multiple_of)
        self.w1, self.w3 = nn.Linear(width, hidden, bias=False), nn.Linear(width, hidden, bias=False)
        self.w2 = nn.Linear(hidden, width, bias=False)

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x_BLC)) * self.w3(x_BLC))


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, bias: bool) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv, self.proj = nn.Linear(width, 3 * width, bias=bias), nn.Linear(width, width, bias=bias)

    def forward(self, x_BLC: torch.Tensor, angles_LP: torch.Tensor | None, mask_LL: torch.Tensor | None,
                cache: KVCache | None, layer: int, causal: bool) -> torch.Tensor:
        """``mask_LL``: True where query ``l`` may attend key ``m``; without one, ``causal`` or
        (with a KV cache, fed one position or one whole map at a time) every key."""
        B, L, C = x_BLC.shape
        q, k, v = self.qkv(x_BLC).view(B, L, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        if angles_LP is not None:
            q, k = apply_rope(q, angles_LP), apply_rope(k, angles_LP)
        past = cache.for_layer(layer) if cache is not None else None
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        if cache is not None:
            cache.store(layer, k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_LL, is_causal=causal and mask_LL is None)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class GPTBlock(nn.Module):
    """LlamaGen's block: RMSNorm, attention with RoPE, RMSNorm, SwiGLU."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.RMSNorm(width, eps=1e-5), nn.RMSNorm(width, eps=1e-5)
        self.attn, self.mlp = Attention(width, heads, bias=False), SwiGLU(width)

    def forward(self, x_BLC, angles_LP=None, mask_LL=None, cache=None, layer=0, cond_BC=None, causal=False):
        x_BLC = x_BLC + self.attn(self.norm1(x_BLC), angles_LP, mask_LL, cache, layer, causal)
        return x_BLC + self.mlp(self.norm2(x_BLC))


class AdaLNBlock(nn.Module):
    """VAR's block: LayerNorms without affine parameters, modulated (scale, shift, gate for
    attention and MLP) by a linear map of the class condition; GELU MLP 4x."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads, bias=True)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x_BLC, angles_LP=None, mask_LL=None, cache=None, layer=0, cond_BC=None, causal=False):
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.modulation(cond_BC)[:, None].chunk(6, dim=-1)
        h = self.norm1(x_BLC) * (1 + scale1) + shift1
        x_BLC = x_BLC + gamma1 * self.attn(h, angles_LP, mask_LL, cache, layer, causal)
        h = self.norm2(x_BLC) * (1 + scale2) + shift2
        return x_BLC + gamma2 * self.mlp(h)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """GPT-2 style: normal(0, 0.02) linear and embedding weights, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
