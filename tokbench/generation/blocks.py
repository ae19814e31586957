"""The generators' transformer block: pre-norm, causal or masked attention with an optional
KV cache and RoPE, and either a SwiGLU MLP with RMSNorm (LlamaGen's GPT) or a GELU MLP with
class-conditioned adaptive LayerNorm (VAR's AdaLN).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tokbench.generation.rope import apply_rope


class KVCache:
    """Static-shape key/value cache: per block, keys and values preallocated to ``max_len``
    positions, written in place at the positions of each step; attention reads all ``max_len``
    keys under a mask of the ones it may see (never an unwritten one). Every decode step then
    has the same shapes and the same tensor addresses: no per-step allocation, no attention
    plan per key length, and a step that CUDA graphs can capture.

    The generator allocates it (`allocate`; a bare ``KVCache()`` handed to a generator is
    allocated on its first step, to the generator's sequence length) and, before each step, sets
    the step's positions and key mask (`begin_step`); each block's attention calls `update`.
    """

    def __init__(self, max_len: int | None = None) -> None:
        self.max_len = max_len
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.positions_L: torch.Tensor | None = None  # positions written by the current step
        self.mask_LM: torch.Tensor | None = None  # True where the step's query l may attend key m

    def allocate(self, layers: int, batch: int, heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device) -> KVCache:
        """Zeroed buffers ``(batch, heads, max_len, head_dim)`` for ``layers`` blocks (zeros: a
        masked key has weight 0, and 0 times a value must stay 0). Returns itself."""
        if self.max_len is None:
            raise ValueError("KVCache.allocate needs max_len (the sequence length)")
        shape = (batch, heads, self.max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        if torch.device(device).type == "cuda":  # fixed addresses: CUDA graphs read them in place
            for t in self.keys + self.values:
                torch._dynamo.mark_static_address(t)
        return self

    @property
    def allocated(self) -> bool:
        return bool(self.keys)

    def begin_step(self, positions_L: torch.Tensor, mask_LM: torch.Tensor) -> None:
        self.positions_L, self.mask_LM = positions_L, mask_LM

    def update(self, i: int, k_BHLD: torch.Tensor, v_BHLD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write block ``i``'s keys and values of this step in place; return the whole buffers."""
        keys, values = self.keys[i], self.values[i]
        keys.index_copy_(2, self.positions_L, k_BHLD.to(keys.dtype))
        values.index_copy_(2, self.positions_L, v_BHLD.to(values.dtype))
        return keys, values


def cache_dtype(module: nn.Module, device: torch.device) -> torch.dtype:
    """The dtype attention's keys come out in: autocast's when it is on, else the weights'."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return next(module.parameters()).dtype


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
        """``mask_LL``: True where query ``l`` may attend key ``m``; without one, ``causal``. With a
        KV cache, the keys are the cache's whole buffers and the mask is the cache's."""
        B, L, C = x_BLC.shape
        q, k, v = self.qkv(x_BLC).view(B, L, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        if angles_LP is not None:
            q, k = apply_rope(q, angles_LP), apply_rope(k, angles_LP)
        if cache is not None:
            k, v = cache.update(layer, k, v)
            mask_LL = cache.mask_LM
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
