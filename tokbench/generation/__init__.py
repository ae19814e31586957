"""The downstream AR prior: a small causal transformer trained on a tokenizer's tokens.

A tokenizer is judged not only by how well it reconstructs but by how well its tokens can
be modelled: the prior's validation negative log-likelihood (bits per image) says how much
an AR model must learn to generate them, and its samples show what it learned.
"""
from tokbench.generation.prior import TokenPrior
from tokbench.generation.sequence import from_sequence, generation_order, to_sequence

__all__ = ["TokenPrior", "to_sequence", "from_sequence", "generation_order"]
