"""`TokenGPT`: next-token prediction over a tokenizer's ids (LlamaGen-style).

The sequence a class-conditional GPT reads is ``[class token, id_0, ..., id_{L-2}]`` and
position ``t`` predicts ``id_t``. The class token is an embedding of the label; index
``num_classes`` is "no class" (unconditional data, and the null condition of classifier-free
guidance: labels are dropped to it with probability ``label_dropout`` in training). Positions
are rotary: 2D over the token grid for ``grid`` layouts, 1D otherwise; the class token is
unrotated. ``generate`` samples with a static KV cache (`blocks.KVCache`: preallocated, the
same shapes at every step; or, for checking, by recomputing the whole prefix every step).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tokbench.generation.blocks import GPTBlock, KVCache, cache_dtype, init_weights
from tokbench.generation.rope import angles_1d, angles_2d, with_prefix
from tokbench.generation.sampling import check_sampling, class_indices, draw, guidance_batch, guided, in_interval


class CausalBackbone(nn.Module):
    """The shared part of the next-token generators: class prefix, causal RoPE blocks, final norm."""

    def __init__(self, seq_len: int, num_classes: int, width: int, depth: int, heads: int,
                 grid: tuple[int, int] | None, rope_base: float) -> None:
        super().__init__()
        if grid is not None and grid[0] * grid[1] != seq_len:
            raise ValueError(f"a {grid[0]}x{grid[1]} grid holds {grid[0] * grid[1]} tokens, not seq_len={seq_len}")
        self.seq_len, self.num_classes = seq_len, num_classes
        self.class_embed = nn.Embedding(num_classes + 1, width)  # + "no class"
        self.blocks = nn.ModuleList(GPTBlock(width, heads) for _ in range(depth))
        self.norm = nn.RMSNorm(width, eps=1e-5)
        head_dim = width // heads
        # Input position p (0 = class token) carries token p-1, so it takes that token's place.
        grid_angles = angles_2d(tuple(grid), head_dim, rope_base) if grid else angles_1d(seq_len, head_dim, rope_base)
        self.register_buffer("angles_LP", with_prefix(grid_angles, 1)[:seq_len], persistent=False)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def class_ids(self, labels_B: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        return class_indices(labels_B, self.num_classes, batch, device)

    def hidden(self, x_BLC: torch.Tensor, start: int, cache: KVCache | None) -> torch.Tensor:
        """Normed outputs of inputs at positions ``start ..``: without a cache, the whole causal
        prefix (``start`` = 0); with one, the next positions after the cached ones."""
        if cache is not None:
            if not cache.allocated:
                self.new_cache(x_BLC.shape[0], x_BLC.device, cache)
            return self.cached_step(x_BLC, torch.arange(start, start + x_BLC.shape[1], device=x_BLC.device), cache)
        angles = self.angles_LP[start:start + x_BLC.shape[1]]
        for i, block in enumerate(self.blocks):
            x_BLC = block(x_BLC, angles, None, None, i, causal=True)
        return self.norm(x_BLC)

    def new_cache(self, batch: int, device: torch.device, cache: KVCache | None = None) -> KVCache:
        """A static KV cache for ``batch`` sequences of ``seq_len`` positions (or ``cache``, allocated so)."""
        attn = self.blocks[0].attn
        width = self.class_embed.embedding_dim
        cache = cache or KVCache()
        cache.max_len = cache.max_len or self.seq_len
        return cache.allocate(len(self.blocks), batch, attn.heads, width // attn.heads,
                              cache_dtype(self, torch.device(device)), device)

    def cached_step(self, x_BLC: torch.Tensor, positions_L: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Normed outputs of the inputs at ``positions_L`` (a tensor: the same shapes and no host
        value at every step, so `tokbench.generation.compile` can compile or graph-capture it),
        attending to every written key at a position up to their own."""
        key_positions_M = torch.arange(cache.max_len, device=x_BLC.device)
        cache.begin_step(positions_L, key_positions_M[None, :] <= positions_L[:, None])
        angles = self.angles_LP.index_select(0, positions_L)
        for i, block in enumerate(self.blocks):
            x_BLC = block(x_BLC, angles, None, cache, i)
        return self.norm(x_BLC)

    def prefix(self, classes_B: torch.Tensor) -> torch.Tensor:
        return self.class_embed(classes_B)[:, None]


class TokenGPT(CausalBackbone):
    arch = "gpt"

    def __init__(self, vocab_size: int, seq_len: int, num_classes: int = 0, width: int = 256, depth: int = 4,
                 heads: int = 4, grid: tuple[int, int] | None = None, rope_base: float = 10_000.0) -> None:
        super().__init__(seq_len, num_classes, width, depth, heads, grid, rope_base)
        self.vocab_size = vocab_size
        self.config = dict(vocab_size=vocab_size, seq_len=seq_len, num_classes=num_classes, width=width, depth=depth,
                           heads=heads, grid=list(grid) if grid else None, rope_base=rope_base)
        self.token_embed = nn.Embedding(vocab_size, width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        init_weights(self)

    def _run(self, x_BLC: torch.Tensor, start: int, cache: KVCache | None) -> torch.Tensor:
        return self.head(self.hidden(x_BLC, start, cache))

    def forward(self, ids_BL: torch.Tensor, labels_B: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, V)`` logits: at ``t`` the distribution of ``ids[:, t]`` given the class and ``ids[:, :t]``."""
        B, L = ids_BL.shape
        if L > self.seq_len:
            raise ValueError(f"a sequence of {L} tokens is longer than the generator's {self.seq_len}")
        cls_B1C = self.class_embed(self.class_ids(labels_B, B, ids_BL.device))[:, None]
        x_BLC = torch.cat([cls_B1C, self.token_embed(ids_BL[:, :-1])], dim=1)
        return self._run(x_BLC, 0, None)

    def loss(self, ids_BL: torch.Tensor, labels_B: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy per token, in nats (the training objective)."""
        return F.cross_entropy(self(ids_BL, labels_B).flatten(0, 1).float(), ids_BL.flatten())

    @torch.no_grad()
    def nll_bits(self, ids_BL: torch.Tensor, labels_B: torch.Tensor | None = None) -> torch.Tensor:
        """``(B,)`` negative log2-likelihood of each whole sequence."""
        nll_BL = F.cross_entropy(self(ids_BL, labels_B).float().transpose(1, 2), ids_BL, reduction="none")
        return nll_BL.sum(1) / math.log(2)

    @torch.no_grad()
    def generate(self, labels_B: torch.Tensor | None = None, num: int | None = None, cfg: float = 1.0,
                 cfg_interval: tuple[float, float] = (0.0, 1.0), temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None,
                 use_cache: bool = True) -> torch.Tensor:
        """``(B, seq_len)`` ids, token by token. ``labels_B`` (or ``num`` unconditional samples);
        ``cfg > 1`` guides towards the class on the steps inside ``cfg_interval``."""
        check_sampling(temperature, top_k, top_p, cfg)
        device = self.head.weight.device
        B, classes_B, guide = guidance_batch(self, labels_B, num, cfg, device)
        ids_BL = torch.zeros(B, 0, dtype=torch.long, device=device)
        cache = self.new_cache(len(classes_B), device) if use_cache else None
        x_BLC = self.class_embed(classes_B)[:, None]  # what is fed next
        for t in range(self.seq_len):
            if use_cache:
                logits = self._run(x_BLC, t, cache)[:, -1]
            else:
                prefix = ids_BL.repeat(2, 1) if guide else ids_BL
                full = torch.cat([self.class_embed(classes_B)[:, None], self.token_embed(prefix)], dim=1)
                logits = self._run(full, 0, None)[:, -1]
            if guide:
                logits = guided(logits, cfg) if in_interval(t, self.seq_len, cfg_interval) else logits[:B]
            next_B = draw(logits, temperature, top_k, top_p, generator)
            ids_BL = torch.cat([ids_BL, next_B[:, None]], dim=1)
            x_BLC = self.token_embed(next_B.repeat(2) if guide else next_B)[:, None]
        return ids_BL
