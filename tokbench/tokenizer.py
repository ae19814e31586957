"""The one interface every tokenizer implements: `Tokenizer`.

Images at the API boundary are float32 ``(B, 3, H, W)`` RGB tensors in ``[0, 1]``.
`encode` validates them, pads them (reflect) to a multiple of ``stride`` and calls the
subclass's `encode_padded`; `decode` calls `decode_padded` and crops back, so a user
never sees the padding and images are never silently resized.

Writing your own tokenizer means implementing three methods::

    class MyTokenizer(tokbench.Tokenizer):
        family, kind, stride = "mine", "discrete", 16
        def layout_for(self, height, width): ...
        def encode_padded(self, x_B3HW): ...   # returns Tokens
        def decode_padded(self, tokens): ...   # returns (B, 3, H_pad, W_pad) in [0, 1]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tokbench.checkpoint import save_pretrained
from tokbench.tokens import TokenLayout, Tokens

# Values a little outside [0, 1] come from resampling filters; far outside means the
# caller passed [-1, 1] or [0, 255] images.
_RANGE_TOLERANCE = 1e-3


def validate_images(images: Any, *, name: str = "images") -> torch.Tensor:
    """Check the API image contract and return the tensor; raise ValueError otherwise."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{name} must have 4 dimensions (B, 3, H, W), got shape {tuple(images.shape)}")
    if images.shape[1] != 3:
        raise ValueError(f"{name} must have 3 (RGB) channels in dim 1, got shape {tuple(images.shape)}")
    if images.dtype != torch.float32:
        raise ValueError(f"{name} must be float32 with values in [0, 1], got dtype {images.dtype}")
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        raise ValueError(
            f"{name} must have values in [0, 1], got min {lo:.4g} and max {hi:.4g} "
            "(convert [-1, 1] with (x + 1) / 2, or [0, 255] with x / 255)"
        )
    return images


def pad_to_multiple(x_BCHW: torch.Tensor, stride: int) -> torch.Tensor:
    """Pad bottom/right to a multiple of ``stride``: reflect, or replicate where the image is too small."""
    H, W = x_BCHW.shape[-2:]
    pad_h, pad_w = (-H) % stride, (-W) % stride
    if pad_h == 0 and pad_w == 0:
        return x_BCHW
    mode = "reflect" if pad_h < H and pad_w < W else "replicate"
    return F.pad(x_BCHW, (0, pad_w, 0, pad_h), mode=mode)


@dataclass
class AutoencoderOutput:
    """What `Tokenizer.autoencode` returns for training.

    ``reconstruction`` is in the API range ``[0, 1]`` but neither clamped nor quantized,
    so gradients flow; ``losses`` holds the tokenizer's own terms (``quantization``,
    ``commitment``, ``kl`` ...), already weighted by the tokenizer's own coefficients
    where the reference recipe fixes them; ``stats`` are detached numbers to log.
    """

    reconstruction: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class Tokenizer(nn.Module):
    """Base class of every tokenizer: families, codec baselines, adapters, plug-ins."""

    family: str = "custom"
    kind: str = "discrete"  # or "continuous"
    stride: int = 1

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}

    # -- what subclasses implement ------------------------------------------------
    def layout_for(self, height: int, width: int) -> TokenLayout:
        """The token layout for an image of this size (after padding to the stride)."""
        raise NotImplementedError

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        """Encode images whose sides are multiples of ``stride``."""
        raise NotImplementedError

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        """Decode to padded images ``(B, 3, H_pad, W_pad)`` in ``[0, 1]``."""
        raise NotImplementedError

    def autoencode(self, x_B3HW: torch.Tensor) -> AutoencoderOutput:
        """Differentiable encode+decode for training (learned tokenizers override this)."""
        raise NotImplementedError(f"{type(self).__name__} is not trainable")

    @property
    def trainable(self) -> bool:
        """Whether this tokenizer implements `autoencode` (what `tokbench train` needs)."""
        return type(self).autoencode is not Tokenizer.autoencode

    def last_layer(self) -> torch.Tensor | None:
        """The decoder's last weight, for GAN losses' adaptive weight (None if not applicable)."""
        return None

    # -- ordered (coarse-to-fine) tokens: optional --------------------------------
    def prefix_lengths(self, layout: TokenLayout) -> tuple[int, ...] | None:
        """Token counts, increasing and ending at ``layout.num_tokens``, at which `decode_prefix`
        can stop; ``None`` (the default) when the tokens have no coarse-to-fine order."""
        return None

    def decode_prefix(self, tokens: Tokens, num_tokens: int) -> torch.Tensor:
        """Decode from the first ``num_tokens`` tokens only (one of `prefix_lengths`)."""
        raise ValueError(f"{self.family} tokenizers have no ordered tokens to decode a prefix of")

    # -- the public API -----------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> Tokens:
        """Images ``(B, 3, H, W)`` float32 in ``[0, 1]`` -> `Tokens`."""
        validate_images(images)
        H, W = images.shape[-2:]
        tokens = self.encode_padded(pad_to_multiple(images, self.stride))
        tokens.image_size = (int(H), int(W))  # the one place it is set (encode_padded sees padded images only)
        return tokens

    @torch.no_grad()
    def decode(self, tokens: Tokens) -> torch.Tensor:
        """`Tokens` -> images ``(B, 3, H, W)`` float32 in ``[0, 1]``, cropped to the original size."""
        if not isinstance(tokens, Tokens):
            raise ValueError(f"decode expects a tokbench.Tokens, got {type(tokens).__name__}")
        if tokens.kind != self.kind:
            raise ValueError(f"{self.family} tokenizer decodes {self.kind} tokens, got {tokens.kind} ones")
        if tokens.image_size is None:
            raise ValueError("Tokens.image_size is not set: pass image_size=(H, W) when building Tokens outside encode()")
        H, W = tokens.image_size
        images = self.decode_padded(tokens)
        return images[..., :H, :W].float().clamp(0.0, 1.0).contiguous()

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """``decode(encode(images))``."""
        return self.decode(self.encode(images))

    def tokens_per_image(self, height: int = 256, width: int = 256) -> int:
        s = self.stride
        return self.layout_for(-(-height // s) * s, -(-width // s) * s).num_tokens

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    def save_pretrained(self, directory: str) -> None:
        """Write ``config.json`` + ``model.safetensors`` (see `tokbench.checkpoint`)."""
        save_pretrained(self, directory)
