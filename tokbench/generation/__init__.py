"""The downstream AR generator: models trained on a tokenizer's tokens.

A tokenizer is judged not only by how well it reconstructs but by how well its tokens can be
generated: `tokbench gen` encodes a dataset (`token_encoding`), trains a generator
(`gpt.TokenGPT`: next token; `next_scale.NextScaleGPT`: VAR's next scale) with Lightning
(`module`), samples it (`sample`) and scores the samples (`scoring`); the `generation` task of
`tokbench eval` is the quick, fixed-protocol version (`evaluate`).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Imported on first use (PEP 562): `tokbench gen --help` must not import torch.
_LAZY = {"TokenGPT": "tokbench.generation.gpt", "NextScaleGPT": "tokbench.generation.next_scale",
         "to_sequence": "tokbench.generation.sequence", "from_sequence": "tokbench.generation.sequence",
         "generation_order": "tokbench.generation.sequence"}
__all__ = ["TokenGPT", "NextScaleGPT", "to_sequence", "from_sequence", "generation_order"]

if TYPE_CHECKING:
    from tokbench.generation.gpt import TokenGPT
    from tokbench.generation.next_scale import NextScaleGPT
    from tokbench.generation.sequence import from_sequence, generation_order, to_sequence


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'tokbench.generation' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
