"""Codec baselines as tokenizers: reference points on the rate-distortion plane.

``identity`` (raw 8-bit pixels: the upper bound every metric is read against),
``jpeg:q=...`` and ``webp:q=...`` (Pillow's encoders) and ``resize:f=...`` (bicubic
down by ``f``, then back up). Their "tokens" are the bytes of the coded image, so bits
per image are the real coded size, not a nominal one.
"""
from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tokbench.imageio import tensor_to_uint8, uint8_to_tensor
from tokbench.tokenizer import Tokenizer
from tokbench.tokens import TokenLayout, Tokens

BYTE_VOCAB = 256


class CodecTokenizer(Tokenizer):
    """A tokenizer whose tokens are a codec's byte stream, one stream per image."""

    kind = "discrete"

    def compress(self, rgb_HW3: np.ndarray) -> bytes:
        raise NotImplementedError

    def decompress(self, data: bytes, height: int, width: int) -> np.ndarray:
        raise NotImplementedError

    def raw_bytes(self, height: int, width: int) -> int | None:
        """Stream length when it is fixed by the image size (None when it varies)."""
        return None

    def layout_for(self, height: int, width: int) -> TokenLayout:
        return TokenLayout("bytes", (self.raw_bytes(height, width) or 0,), vocab_size=BYTE_VOCAB)

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        streams = [self.compress(tensor_to_uint8(x)) for x in x_B3HW]
        length = max(len(s) for s in streams)
        ids = torch.full((len(streams), length), -1, dtype=torch.long)
        for i, s in enumerate(streams):
            ids[i, : len(s)] = torch.frombuffer(bytearray(s), dtype=torch.uint8).long()
        bits = torch.tensor([8.0 * len(s) for s in streams])
        H, W = x_B3HW.shape[-2:]
        return Tokens(TokenLayout("bytes", (length,), vocab_size=BYTE_VOCAB), ids=ids, bits=bits,
                      extra={"padded_size": (H, W)})

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        H, W = tokens.extra.get("padded_size", tokens.image_size)
        images = []
        for row in tokens.ids.cpu():
            data = bytes(row[row >= 0].to(torch.uint8).tolist())
            images.append(uint8_to_tensor(self.decompress(data, H, W)))
        return torch.stack(images)


class IdentityCodec(CodecTokenizer):
    """Raw 8-bit RGB: the reconstruction is the 8-bit original."""

    family = "identity"

    def raw_bytes(self, height: int, width: int) -> int:
        return 3 * height * width

    def compress(self, rgb_HW3: np.ndarray) -> bytes:
        return rgb_HW3.tobytes()

    def decompress(self, data: bytes, height: int, width: int) -> np.ndarray:
        return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)


class PillowCodec(CodecTokenizer):
    """JPEG or WebP at quality ``q`` through Pillow."""

    def __init__(self, format_name: str, q: int, **save_options) -> None:
        super().__init__()
        if not isinstance(q, int) or not 1 <= q <= 100:
            raise ValueError(f"{format_name} quality q must be an integer in 1..100, got {q!r}")
        self.family, self.format_name, self.q, self.save_options = format_name.lower(), format_name, q, save_options
        self.config = {"q": q}

    def compress(self, rgb_HW3: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(rgb_HW3).save(buffer, format=self.format_name, quality=self.q, **self.save_options)
        return buffer.getvalue()

    def decompress(self, data: bytes, height: int, width: int) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)


class ResizeCodec(CodecTokenizer):
    """Bicubic (antialiased) downsampling by ``f`` stored as 8-bit pixels, then bicubic upsampling."""

    family = "resize"

    def __init__(self, f: int) -> None:
        super().__init__()
        if not isinstance(f, int) or f < 1:
            raise ValueError(f"resize factor f must be an integer >= 1, got {f!r}")
        self.stride, self.f = f, f
        self.config = {"f": f}

    def raw_bytes(self, height: int, width: int) -> int:
        return 3 * (height // self.f) * (width // self.f)

    def compress(self, rgb_HW3: np.ndarray) -> bytes:
        x = uint8_to_tensor(rgb_HW3).unsqueeze(0)
        small = F.interpolate(x, scale_factor=1 / self.f, mode="bicubic", antialias=True, align_corners=False)
        return tensor_to_uint8(small[0]).tobytes()

    def decompress(self, data: bytes, height: int, width: int) -> np.ndarray:
        small = np.frombuffer(data, dtype=np.uint8).reshape(height // self.f, width // self.f, 3)
        x = uint8_to_tensor(small).unsqueeze(0)
        return tensor_to_uint8(F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False)[0])


def build_identity() -> IdentityCodec:
    return IdentityCodec()


def build_jpeg(q: int = 75) -> PillowCodec:
    # 4:2:0 chroma subsampling, Pillow's default, as a typical JPEG file.
    return PillowCodec("JPEG", q)


def build_webp(q: int = 75) -> PillowCodec:
    return PillowCodec("WEBP", q, method=4)


def build_resize(f: int = 4) -> ResizeCodec:
    return ResizeCodec(f)


build_jpeg.variants = {"q=10": {"q": 10}, "q=50": {"q": 50}, "q=90": {"q": 90}}
build_webp.variants = {"q=10": {"q": 10}, "q=50": {"q": 50}, "q=90": {"q": 90}}
build_resize.variants = {"f=2": {"f": 2}, "f=4": {"f": 4}, "f=8": {"f": 8}}
