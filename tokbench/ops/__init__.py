"""Numerical ops shared by the quantizers."""
from tokbench.ops.nearest_codeword import active_backend, nearest_codeword, nearest_codeword_torch

__all__ = ["nearest_codeword", "nearest_codeword_torch", "active_backend"]
