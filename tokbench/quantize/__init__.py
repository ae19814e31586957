"""Quantizers shared by the tokenizer families: `VectorQuantizer` (searches codes with
`tokbench.ops.nearest_codeword`), the multi-scale residual quantizer, and the search-free
LFQ, BSQ and FSQ."""
from tokbench.quantize.base import LOSS_NAMES, Quantizer
from tokbench.quantize.binary import BinarySphericalQuantizer, LookupFreeQuantizer
from tokbench.quantize.factory import QUANTIZERS, make_quantizer
from tokbench.quantize.fsq import FiniteScalarQuantizer
from tokbench.quantize.implicit import ImplicitQuantizer
from tokbench.quantize.output import QuantizerOutput
from tokbench.quantize.residual_scale import VAR_SCALES_256, MultiScaleResidualQuantizer
from tokbench.quantize.vector import VectorQuantizer

__all__ = ["Quantizer", "LOSS_NAMES", "VectorQuantizer", "MultiScaleResidualQuantizer", "QuantizerOutput", "VAR_SCALES_256",
           "ImplicitQuantizer", "LookupFreeQuantizer", "BinarySphericalQuantizer", "FiniteScalarQuantizer",
           "QUANTIZERS", "make_quantizer"]
