"""The quantizer contract every tokenizer family relies on.

A `Quantizer` maps encoder features to codes and back:

* ``forward(z) -> QuantizerOutput``: quantized features with straight-through gradients,
  the ids, the losses under the names in `LOSS_NAMES` (``codebook`` moves the codes, absent
  when codes are EMA-updated; ``commitment`` moves the encoder, weighted by ``beta``) and
  the statistics ``usage`` and ``perplexity``;
* ``codebooks()``: the `VectorQuantizer` codebooks it searches. Every search goes through
  `VectorQuantizer.assign`, which in training counts hits (reduced over ranks), EMA-updates,
  restarts dead codes and shows the searched vectors to the codebook's ``observers`` -- the
  hook the codebook entropy loss uses, whatever the quantizer around the codebook.
"""
from __future__ import annotations

from torch import nn

LOSS_NAMES = ("codebook", "commitment")


class Quantizer(nn.Module):
    """Base class of quantizers (see the module docstring)."""

    def codebooks(self) -> list:
        """The `VectorQuantizer` codebooks this quantizer searches."""
        raise NotImplementedError
