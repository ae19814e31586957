"""The downstream AR generator: models trained on a tokenizer's tokens.

A tokenizer is judged not only by how well it reconstructs but by how well its tokens can be
generated: `tokbench gen` encodes a dataset (`token_encoding`), trains a generator
(`gpt.TokenGPT`: next token; `next_scale.NextScaleGPT`: VAR's next scale) with Lightning
(`module`), samples it (`sample`) and scores the samples (`scoring`); the `generation` task of
`tokbench eval` is the quick, fixed-protocol version (`evaluate`).
"""
from tokbench.generation.gpt import TokenGPT
from tokbench.generation.next_scale import NextScaleGPT
from tokbench.generation.sequence import from_sequence, generation_order, to_sequence

__all__ = ["TokenGPT", "NextScaleGPT", "to_sequence", "from_sequence", "generation_order"]
