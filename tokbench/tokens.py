"""`Tokens` and `TokenLayout`: what a tokenizer hands to an AR model and takes back.

A layout says how many tokens there are and how they are arranged, which is what
the AR generator needs to pick a generation order:

* ``grid``      -- a 2D map ``h x w`` (VQGAN/LlamaGen, KL-VAE latents); ids ``(B, h, w)``,
                   latents ``(B, C, h, w)``.
* ``scales``    -- VAR's next-scale maps; ``shape`` is the final token grid ``(h, w)`` (as for
                   ``grid``) and ``scales`` the schedule of map sides for a square grid
                   (``1,2,3,4,5,6,8,10,13,16``); on a non-square grid scale ``k`` is
                   ``round(k*h/S) x round(k*w/S)`` (``S`` the last scale), see `scale_shapes`.
                   Ids are flat ``(B, L)``, scale by scale, each map in raster order.
* ``sequence``  -- a flat 1D sequence of ``K`` tokens not tied to the pixel grid (TiTok,
                   Hita); ids ``(B, K)``, latents ``(B, K, C)``.
* ``bytes``     -- a codec's encoded stream (JPEG/WebP baselines); ids ``(B, L)`` padded
                   with -1, the real size per image in ``Tokens.bits``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

ARRANGEMENTS = ("grid", "scales", "sequence", "bytes")


def scale_schedule_shapes(schedule: tuple[int, ...], grid: tuple[int, int]) -> list[tuple[int, int]]:
    """Map a square schedule (sides, last = full grid) onto a possibly non-square grid."""
    last = schedule[-1]
    h, w = grid
    return [(min(h, max(1, round(k * h / last))), min(w, max(1, round(k * w / last)))) for k in schedule]


@dataclass(frozen=True)
class TokenLayout:
    """Shape and vocabulary of one image's tokens (independent of the batch).

    ``shape`` is always the arrangement's own extent: ``(h, w)`` for ``grid`` and for the
    final grid of ``scales``, ``(K,)`` for a ``sequence``, ``(L,)`` for ``bytes``; the scale
    schedule of a ``scales`` layout is its own field, ``scales``.
    """

    arrangement: str
    shape: tuple[int, ...]
    vocab_size: int | None = None  # discrete tokenizers
    latent_channels: int | None = None  # continuous tokenizers
    scales: tuple[int, ...] | None = None  # map sides of a ``scales`` layout, coarse to fine

    def __post_init__(self) -> None:
        if self.arrangement not in ARRANGEMENTS:
            raise ValueError(f"layout arrangement must be one of {ARRANGEMENTS}, got {self.arrangement!r}")
        if (self.vocab_size is None) == (self.latent_channels is None):
            raise ValueError("a layout has exactly one of vocab_size (discrete) or latent_channels (continuous)")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if (self.arrangement == "scales") != (self.scales is not None):
            raise ValueError("a layout has a scale schedule (scales=...) exactly when its arrangement is 'scales'")
        if self.arrangement in ("grid", "scales") and len(self.shape) != 2:
            raise ValueError(f"a {self.arrangement!r} layout's shape is its (h, w) token grid, got {self.shape}")
        if self.scales is not None:
            scales = tuple(int(k) for k in self.scales)
            if not scales or any(b <= a for a, b in zip(scales, scales[1:])):
                raise ValueError(f"scales must be a non-empty increasing schedule, got {scales}")
            object.__setattr__(self, "scales", scales)

    @property
    def grid(self) -> tuple[int, int]:
        """The ``(h, w)`` token grid of a ``grid`` or ``scales`` layout."""
        if self.arrangement not in ("grid", "scales"):
            raise ValueError(f"a {self.arrangement!r} layout has no token grid")
        return self.shape  # type: ignore[return-value]

    def scale_shapes(self) -> list[tuple[int, int]]:
        """``(h_k, w_k)`` of each map of a ``scales`` layout."""
        if self.arrangement != "scales":
            raise ValueError("scale_shapes is defined for the 'scales' arrangement only")
        return scale_schedule_shapes(self.scales, self.grid)

    @property
    def kind(self) -> str:
        return "discrete" if self.vocab_size is not None else "continuous"

    @property
    def num_tokens(self) -> int:
        """Tokens per image (for ``bytes``: the padded length of the stream)."""
        if self.arrangement == "grid":
            return self.shape[0] * self.shape[1]
        if self.arrangement == "scales":
            return sum(h * w for h, w in self.scale_shapes())
        return self.shape[0]

    @property
    def bits_per_image(self) -> float | None:
        """``num_tokens * log2(vocab)`` for fixed-length discrete tokens; None otherwise."""
        if self.vocab_size is None or self.arrangement == "bytes":
            return None
        return self.num_tokens * math.log2(self.vocab_size)

    def describe(self) -> str:
        if self.arrangement == "grid":
            where = f"{self.shape[0]}x{self.shape[1]} grid"
        elif self.arrangement == "scales":
            where = "scales " + ",".join(map(str, self.scales))
        elif self.arrangement == "sequence":
            where = f"1D sequence of {self.shape[0]}"
        elif self.num_tokens == 0:
            return f"variable-length byte stream, vocab {self.vocab_size}"
        else:
            where = "byte stream"
        what = f"vocab {self.vocab_size}" if self.vocab_size is not None else f"{self.latent_channels} latent channels"
        return f"{self.num_tokens} tokens ({where}), {what}"

    @classmethod
    def from_dict(cls, d: dict) -> "TokenLayout":
        """The inverse of `to_dict` (its derived ``num_tokens`` and ``bits_per_image`` are ignored)."""
        scales = d.get("scales")
        return cls(d["arrangement"], tuple(d["shape"]), vocab_size=d.get("vocab_size"),
                   latent_channels=d.get("latent_channels"), scales=tuple(scales) if scales is not None else None)

    def to_dict(self) -> dict:
        """A JSON-ready description (read back with `from_dict`)."""
        return {
            "arrangement": self.arrangement,
            "shape": list(self.shape),
            "vocab_size": self.vocab_size,
            "latent_channels": self.latent_channels,
            "num_tokens": self.num_tokens,
            "bits_per_image": self.bits_per_image,
            **({"scales": list(self.scales)} if self.scales is not None else {}),
        }


@dataclass
class Tokens:
    """A batch of tokens: discrete ``ids`` or continuous ``latents``, plus their layout.

    ``image_size`` is the (H, W) of the images before padding to the stride, so that
    ``decode`` crops back. It is set in one place, `Tokenizer.encode` (a family's
    ``encode_padded`` leaves it unset: it only sees padded images); tokens built elsewhere,
    e.g. sampled by a generator, give it explicitly. ``bits`` holds per-image sizes in bits where they vary
    (codec baselines); otherwise bits come from the layout.
    """

    layout: TokenLayout
    image_size: tuple[int, int] | None = None
    ids: torch.Tensor | None = None
    latents: torch.Tensor | None = None
    bits: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.ids is None) == (self.latents is None):
            raise ValueError("Tokens carries exactly one of ids or latents")
        if self.ids is not None and self.ids.dtype != torch.long:
            raise ValueError(f"Tokens.ids must be int64 (LongTensor), got {self.ids.dtype}")
        if self.latents is not None and not self.latents.is_floating_point():
            raise ValueError(f"Tokens.latents must be a float tensor, got {self.latents.dtype}")
        if self.image_size is not None:
            self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    @property
    def kind(self) -> str:
        return "discrete" if self.ids is not None else "continuous"

    @property
    def batch_size(self) -> int:
        return int((self.ids if self.ids is not None else self.latents).shape[0])

    def bits_per_image(self) -> torch.Tensor | None:
        """Per-image bits, shape ``(B,)``; None for continuous tokens without a coded size."""
        if self.bits is not None:
            return self.bits.float()
        fixed = self.layout.bits_per_image
        if fixed is None:
            return None
        return torch.full((self.batch_size,), float(fixed))

    def ids_per_scale(self) -> list[torch.Tensor]:
        """For the ``scales`` layout: the flat ids split into ``(B, k, k)`` maps."""
        if self.layout.arrangement != "scales" or self.ids is None:
            raise ValueError("ids_per_scale needs discrete tokens with a 'scales' layout")
        maps, start = [], 0
        for h, w in self.layout.scale_shapes():
            maps.append(self.ids[:, start : start + h * w].reshape(-1, h, w))
            start += h * w
        return maps

    def to(self, device: torch.device | str) -> "Tokens":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, ids=move(self.ids), latents=move(self.latents), bits=move(self.bits))
