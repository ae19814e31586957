"""tokbench: a toolkit and benchmark suite for visual tokenizers."""
from tokbench.checkpoint import CheckpointError, load, save_pretrained
from tokbench.registry import create, register
from tokbench.tokenizer import AutoencoderOutput, Tokenizer, validate_images
from tokbench.tokens import TokenLayout, Tokens
from tokbench.version import __version__

__all__ = [
    "Tokenizer", "Tokens", "TokenLayout", "AutoencoderOutput", "validate_images",
    "load", "save_pretrained", "create", "register", "CheckpointError", "__version__",
]
