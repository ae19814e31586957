"""`make_quantizer`: the ``quantizer=`` option of the codebook families (``vq``, ``residual_scale``).

``"vq"`` is the nearest-codeword `VectorQuantizer`; ``"lfq"``, ``"bsq"`` and ``"fsq"`` are the
search-free quantizers, whose grid fixes the codebook: ``2**code_dim`` codes for LFQ/BSQ,
``prod(levels)`` codes of ``len(levels)`` channels for FSQ. The family's ``codebook_size`` and
``code_dim`` must agree with that grid (the error says what they must be), so a config
always states the vocabulary it trains.
"""
from __future__ import annotations

import math
from typing import Any

from tokbench.quantize.base import Quantizer
from tokbench.quantize.binary import BinarySphericalQuantizer, LookupFreeQuantizer
from tokbench.quantize.fsq import FiniteScalarQuantizer
from tokbench.quantize.vector import VectorQuantizer

QUANTIZERS = ("vq", "lfq", "bsq", "fsq")
_BINARY = {"lfq": LookupFreeQuantizer, "bsq": BinarySphericalQuantizer}


def make_quantizer(quantizer: str, codebook_size: int, code_dim: int, *, beta: float = 0.25,
                   l2_normalize: bool = False, use_ema: bool = False, dead_code_steps: int = 0,
                   options: dict[str, Any] | None = None) -> Quantizer:
    """The quantizer ``quantizer`` over ``codebook_size`` codes of ``code_dim`` channels.

    ``options`` go to its constructor (e.g. ``{"levels": [8, 5, 5, 5]}`` for FSQ,
    ``{"entropy_weight": 0.1}`` for LFQ). ``l2_normalize``, ``use_ema`` and
    ``dead_code_steps`` are `VectorQuantizer` options; the grid quantizers have no table to
    normalise, EMA-update or restart. ``beta`` (commitment) applies to vq, lfq and bsq;
    FSQ takes it from ``options`` only (the paper uses none).
    """
    options = dict(options or {})
    if quantizer not in QUANTIZERS:
        raise ValueError(f"quantizer must be one of {', '.join(QUANTIZERS)}, got {quantizer!r}")
    try:
        if quantizer == "vq":
            return VectorQuantizer(codebook_size, code_dim, l2_normalize=l2_normalize, beta=beta, use_ema=use_ema,
                                   dead_code_steps=dead_code_steps, **options)
        if use_ema or dead_code_steps:
            raise ValueError(f"quantizer={quantizer!r} has no codebook table: use_ema and dead_code_steps apply to "
                             f"quantizer='vq' only (got use_ema={use_ema}, dead_code_steps={dead_code_steps})")
        if quantizer in _BINARY:
            if codebook_size != 2 ** code_dim:
                raise ValueError(f"quantizer={quantizer!r} has 2**code_dim codes: code_dim={code_dim} needs "
                                 f"codebook_size={2 ** code_dim}, got {codebook_size}")
            return _BINARY[quantizer](code_dim, beta=beta, **options)
        levels = options.pop("levels", None)
        if levels is None:
            raise ValueError("quantizer='fsq' needs quantizer_options.levels (levels per channel, e.g. [8, 5, 5, 5])")
        levels = [int(n) for n in levels]
        if len(levels) != code_dim or math.prod(levels) != codebook_size:
            raise ValueError(f"quantizer='fsq' with levels {levels} has {len(levels)} channels and "
                             f"{math.prod(levels)} codes: set code_dim={len(levels)} and "
                             f"codebook_size={math.prod(levels)} (got {code_dim} and {codebook_size})")
        return FiniteScalarQuantizer(levels, **options)
    except TypeError as err:  # an unknown option name
        raise ValueError(f"quantizer_options for quantizer={quantizer!r}: {err}") from None
