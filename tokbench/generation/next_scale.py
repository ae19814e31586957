"""`NextScaleGPT`: VAR's next-scale prediction over a multi-scale residual tokenizer's maps.

All tokens of a map are predicted at once, from the maps before it. The input sequence is
``[start tokens of map 0, inputs of map 1, ..., inputs of map K-1]``: map 0's inputs are the
class embedding plus learned start positions; map ``k``'s inputs are the tokenizer's
accumulated feature map from maps ``< k``, area-downsampled to map ``k``'s size (the
tokenizer<->generator contract: ``tokenizer.next_scale_inputs`` in training,
``tokenizer.next_scale_step`` while sampling). Attention is block-causal: a position of map
``k`` sees every position of maps ``<= k``. Blocks are VAR's AdaLN blocks conditioned on the
class; positions are learned (absolute, plus one embedding per map level).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tokbench.generation.blocks import AdaLNBlock, KVCache, cache_dtype, init_weights
from tokbench.generation.sampling import check_sampling, class_indices, draw, guidance_batch, guided
from tokbench.tokens import TokenLayout


def block_causal_mask(scale_shapes: list[tuple[int, int]]) -> torch.Tensor:
    """``(L, L)`` bool, True where a position of map ``k`` may attend a position of map ``j <= k``."""
    level_L = level_of_positions(scale_shapes)
    return level_L[None, :] <= level_L[:, None]


def level_of_positions(scale_shapes: list[tuple[int, int]]) -> torch.Tensor:
    """``(L,)`` the map index of each position."""
    return torch.cat([torch.full((h * w,), k, dtype=torch.long) for k, (h, w) in enumerate(scale_shapes)])


def cfg_at_scale(cfg: float, si: int, num_scales: int, schedule: str) -> float:
    """Guidance weight at map ``si``: ``constant``, or VAR's ``linear`` ramp from 1 (no guidance)
    at the first map to ``cfg`` at the last (VAR's ``cfg=1.5`` equals ``cfg=2.5, linear`` here)."""
    if schedule == "constant":
        return cfg
    if schedule == "linear":
        return 1 + (cfg - 1) * si / max(1, num_scales - 1)
    raise ValueError(f"cfg schedule must be 'constant' or 'linear', got {schedule!r}")


class NextScaleGPT(nn.Module):
    arch = "next_scale"

    def __init__(self, vocab_size: int, scale_shapes: list[tuple[int, int]], code_dim: int, num_classes: int = 0,
                 width: int = 256, depth: int = 4, heads: int = 4) -> None:
        super().__init__()
        self.scale_shapes = [tuple(int(v) for v in hw) for hw in scale_shapes]
        self.vocab_size, self.num_classes = vocab_size, num_classes
        self.seq_len = sum(h * w for h, w in self.scale_shapes)
        self.first_len = self.scale_shapes[0][0] * self.scale_shapes[0][1]
        self.config = dict(vocab_size=vocab_size, scale_shapes=[list(s) for s in self.scale_shapes], code_dim=code_dim,
                           num_classes=num_classes, width=width, depth=depth, heads=heads)
        self.class_embed = nn.Embedding(num_classes + 1, width)  # + "no class" (unconditional / CFG's null)
        self.start_positions = nn.Parameter(torch.randn(1, self.first_len, width) * 0.02)
        self.input_proj = nn.Linear(code_dim, width)
        self.positions = nn.Parameter(torch.randn(1, self.seq_len, width) * 0.02)
        self.level_embed = nn.Embedding(len(self.scale_shapes), width)
        self.blocks = nn.ModuleList(AdaLNBlock(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.head_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.head = nn.Linear(width, vocab_size)
        self.register_buffer("level_L", level_of_positions(self.scale_shapes), persistent=False)
        self.register_buffer("mask_LL", block_causal_mask(self.scale_shapes), persistent=False)
        init_weights(self)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def class_ids(self, labels_B: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        return class_indices(labels_B, self.num_classes, batch, device)

    def _embed(self, x_BLC: torch.Tensor, start: int) -> torch.Tensor:
        stop = start + x_BLC.shape[1]
        return x_BLC + self.positions[:, start:stop] + self.level_embed(self.level_L[start:stop])

    def _run(self, x_BLC: torch.Tensor, cond_BC: torch.Tensor, mask_LL: torch.Tensor | None,
             cache: KVCache | None) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x_BLC = block(x_BLC, None, mask_LL, cache, i, cond_BC)
        scale, shift = self.head_modulation(cond_BC)[:, None].chunk(2, dim=-1)
        return self.head(self.norm(x_BLC) * (1 + scale) + shift)

    def new_cache(self, batch: int, device: torch.device) -> KVCache:
        """A static KV cache for ``batch`` samples of all the maps' positions."""
        attn, width = self.blocks[0].attn, self.class_embed.embedding_dim
        return KVCache(self.seq_len).allocate(len(self.blocks), batch, attn.heads, width // attn.heads,
                                              cache_dtype(self, torch.device(device)), device)

    def cached_step(self, x_BlC: torch.Tensor, positions_l: torch.Tensor, cond_BC: torch.Tensor,
                    cache: KVCache) -> torch.Tensor:
        """Logits of one map's inputs at ``positions_l``, attending (block-causally) to the cached
        keys of the maps up to its own; the unwritten keys belong to later maps, so masked."""
        cache.begin_step(positions_l, self.mask_LL.index_select(0, positions_l))
        return self._run(x_BlC, cond_BC, None, cache)

    def _start(self, classes_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cond_BC = self.class_embed(classes_B)
        return cond_BC, cond_BC[:, None] + self.start_positions

    def forward(self, inputs_BlC: torch.Tensor, labels_B: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, V)`` logits of every map, from the teacher-forcing ``inputs`` of maps 1..K-1."""
        B = inputs_BlC.shape[0]
        if inputs_BlC.shape[1] != self.seq_len - self.first_len:
            raise ValueError(f"expected inputs for {self.seq_len - self.first_len} positions (maps 1..K-1), "
                             f"got {inputs_BlC.shape[1]}")
        cond_BC, start_BlC = self._start(self.class_ids(labels_B, B, inputs_BlC.device))
        x_BLC = self._embed(torch.cat([start_BlC, self.input_proj(inputs_BlC)], dim=1), 0)
        return self._run(x_BLC, cond_BC, self.mask_LL, None)

    def loss(self, inputs_BlC: torch.Tensor, ids_BL: torch.Tensor, labels_B: torch.Tensor | None = None) -> torch.Tensor:
        return F.cross_entropy(self(inputs_BlC, labels_B).flatten(0, 1).float(), ids_BL.flatten())

    @torch.no_grad()
    def nll_bits(self, inputs_BlC: torch.Tensor, ids_BL: torch.Tensor, labels_B: torch.Tensor | None = None) -> torch.Tensor:
        nll_BL = F.cross_entropy(self(inputs_BlC, labels_B).float().transpose(1, 2), ids_BL, reduction="none")
        return nll_BL.sum(1) / math.log(2)

    @torch.no_grad()
    def generate(self, tokenizer, layout: TokenLayout, labels_B: torch.Tensor | None = None, num: int | None = None,
                 cfg: float = 1.0, cfg_schedule: str = "linear", temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None,
                 use_cache: bool = True) -> torch.Tensor:
        """``(B, L)`` ids, one map at a time; ``tokenizer`` turns each sampled map into the next
        map's input (``next_scale_step``)."""
        check_sampling(temperature, top_k, top_p, cfg)
        if [tuple(s) for s in layout.scale_shapes()] != self.scale_shapes:
            raise ValueError(f"the layout's maps {layout.scale_shapes()} are not the generator's {self.scale_shapes}")
        device = self.head.weight.device
        B, classes_B, guide = guidance_batch(self, labels_B, num, cfg, device)
        cond_BC, x_BlC = self._start(classes_B)
        cache = self.new_cache(len(classes_B), device) if use_cache else None
        seen_BLC, start, f_hat, maps = x_BlC[:, :0], 0, None, []
        for si, (h, w) in enumerate(self.scale_shapes):
            x_BlC = self._embed(x_BlC, start)
            if use_cache:
                logits = self.cached_step(x_BlC, torch.arange(start, start + h * w, device=device), cond_BC, cache)
            else:
                seen_BLC = torch.cat([seen_BLC, x_BlC], dim=1)
                stop = start + h * w
                logits = self._run(seen_BLC, cond_BC, self.mask_LL[:stop, :stop], None)[:, start:]
            if guide:
                logits = guided(logits, cfg_at_scale(cfg, si, len(self.scale_shapes), cfg_schedule))
            ids_Bl = draw(logits.flatten(0, 1), temperature, top_k, top_p, generator).view(B, h * w)
            maps.append(ids_Bl)
            f_hat, next_BlC = tokenizer.next_scale_step(f_hat, ids_Bl.view(B, h, w), si, layout)
            start += h * w
            if next_BlC is not None:
                next_BlC = self.input_proj(next_BlC.to(self.input_proj.weight.dtype))
                x_BlC = next_BlC.repeat(2, 1, 1) if guide else next_BlC
        return torch.cat(maps, dim=1)
