"""Quantizers shared by the tokenizer families; all search codes with `tokbench.ops.nearest_codeword`."""
from tokbench.quantize.base import LOSS_NAMES, Quantizer
from tokbench.quantize.output import QuantizerOutput
from tokbench.quantize.residual_scale import VAR_SCALES_256, MultiScaleResidualQuantizer
from tokbench.quantize.vector import VectorQuantizer

__all__ = ["Quantizer", "LOSS_NAMES", "VectorQuantizer", "MultiScaleResidualQuantizer", "QuantizerOutput", "VAR_SCALES_256"]
