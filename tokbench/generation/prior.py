"""`TokenPrior`: a small GPT over token ids (nanoGPT-style, pre-norm, learned positions).

The sequence is prefixed with a start token (id ``vocab_size``), so position ``t`` predicts
token ``t`` from tokens ``< t``; ``nll_bits`` is the summed negative log2-likelihood per sequence.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tokbench.nn.vit import Transformer


class TokenPrior(nn.Module):
    def __init__(self, vocab_size: int, seq_len: int, width: int = 256, depth: int = 4, heads: int = 4) -> None:
        super().__init__()
        self.vocab_size, self.seq_len = vocab_size, seq_len
        self.config = dict(vocab_size=vocab_size, seq_len=seq_len, width=width, depth=depth, heads=heads)
        self.embed = nn.Embedding(vocab_size + 1, width)  # + the start token
        self.positions = nn.Parameter(torch.zeros(1, seq_len, width))
        nn.init.normal_(self.positions, std=0.02)
        self.transformer = Transformer(width, depth, heads, causal=True)
        self.head = nn.Linear(width, vocab_size)

    def logits(self, seq_BL: torch.Tensor) -> torch.Tensor:
        """``(B, L, V)``: at position t, the distribution of token t given tokens < t."""
        B, L = seq_BL.shape
        if L > self.seq_len:
            raise ValueError(f"sequence of {L} tokens is longer than the prior's {self.seq_len}")
        start_B1 = torch.full((B, 1), self.vocab_size, dtype=torch.long, device=seq_BL.device)
        inputs_BL = torch.cat([start_B1, seq_BL[:, :-1]], dim=1)
        return self.head(self.transformer(self.embed(inputs_BL) + self.positions[:, :L]))

    def loss(self, seq_BL: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy per token, in nats (the training objective)."""
        return F.cross_entropy(self.logits(seq_BL).flatten(0, 1), seq_BL.flatten())

    @torch.no_grad()
    def nll_bits(self, seq_BL: torch.Tensor) -> torch.Tensor:
        """``(B,)`` negative log2-likelihood of each whole sequence."""
        nll_BL = F.cross_entropy(self.logits(seq_BL).transpose(1, 2), seq_BL, reduction="none")
        return nll_BL.sum(1) / math.log(2)

    @torch.no_grad()
    def sample(self, num: int, temperature: float = 1.0, top_k: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``(num, seq_len)`` ids drawn token by token (no KV cache: the prior is small)."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        device = self.positions.device
        seq_BL = torch.zeros(num, 0, dtype=torch.long, device=device)
        for t in range(self.seq_len):
            padded = torch.cat([seq_BL, seq_BL.new_zeros(num, 1)], dim=1)  # position t's input is token t-1
            logits_BV = self.logits(padded)[:, t].float() / temperature
            if top_k is not None and top_k < self.vocab_size:
                kth = logits_BV.topk(top_k, dim=1).values[:, -1:]
                logits_BV = logits_BV.masked_fill(logits_BV < kth, float("-inf"))
            probs_BV = logits_BV.softmax(dim=1)
            next_B1 = torch.multinomial(probs_BV.cpu(), 1, generator=generator).to(device)
            seq_BL = torch.cat([seq_BL, next_B1], dim=1)
        return seq_BL
