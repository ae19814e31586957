"""tokbench: a toolkit and benchmark suite for visual tokenizers.

The public names below are imported on first use (PEP 562), so that ``import tokbench`` and
the CLI's start-up do not import torch; ``tokbench.load`` and the rest work as before.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tokbench.version import __version__

# public name -> the module that defines it
_LAZY = {
    "CheckpointError": "tokbench.checkpoint", "load": "tokbench.checkpoint", "save_pretrained": "tokbench.checkpoint",
    "create": "tokbench.registry", "register": "tokbench.registry",
    "AutoencoderOutput": "tokbench.tokenizer", "Tokenizer": "tokbench.tokenizer", "validate_images": "tokbench.tokenizer",
    "TokenLayout": "tokbench.tokens", "Tokens": "tokbench.tokens",
}

__all__ = [
    "Tokenizer", "Tokens", "TokenLayout", "AutoencoderOutput", "validate_images",
    "load", "save_pretrained", "create", "register", "CheckpointError", "__version__",
]

if TYPE_CHECKING:
    from tokbench.checkpoint import CheckpointError, load, save_pretrained
    from tokbench.registry import create, register
    from tokbench.tokenizer import AutoencoderOutput, Tokenizer, validate_images
    from tokbench.tokens import TokenLayout, Tokens


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tokbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
