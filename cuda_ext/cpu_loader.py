"""Build (on first use, or ahead of time with ``tokbench build-ext``) and load the fused CPU kernel.

``nearest_codeword_cpu.cpp`` is compiled by the system C++ compiler through
``torch.utils.cpp_extension`` (ninja, no CUDA) into PyTorch's extensions cache, once per
machine; later processes only import it. ``TOKBENCH_DISABLE_CPU_EXT=1`` turns it off. A missing
compiler or a failed build falls back to the chunked PyTorch path with one warning saying why;
`extension_status` reports which path is active and never triggers a build by itself.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SOURCES = [HERE / "nearest_codeword_cpu.cpp"]
NAME = "tokbench_nearest_codeword_cpu"
# Codeword lengths up to which the fused kernel beats the chunked GEMM path on the CPU
# (BENCHMARKS.md: faster than MKL-GEMM chunked path at every D measured, 8 to 256; beyond 256
# unmeasured, so the GEMM path keeps it).
MAX_FUSED_DIM = int(os.environ.get("TOKBENCH_CPU_EXT_MAX_DIM", 256))
_state: dict = {"module": None, "error": None, "tried": False}


def disabled() -> bool:
    return os.environ.get("TOKBENCH_DISABLE_CPU_EXT") == "1"


def build_extension(verbose: bool = False):
    """Compile (if the cache holds no current build) and import the CPU extension."""
    from torch.utils import cpp_extension

    # -fopenmp: at::parallel_for is a header template that needs it to run on several threads.
    # No -ffast-math and no -march: exact IEEE fp32, and the AVX2 kernel is chosen at run time.
    return cpp_extension.load(name=NAME, sources=[str(s) for s in SOURCES], verbose=verbose,
                              extra_cflags=["-O3", "-fopenmp"], extra_ldflags=["-fopenmp"])


def load_extension():
    """The compiled module, or None (disabled, or a failed build -- warned once)."""
    if disabled():
        return None
    if not _state["tried"]:
        _state["tried"] = True
        try:
            _state["module"] = build_extension()
        except Exception as err:  # no compiler, no ninja, a compile error: fall back, say why once
            _state["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
            warnings.warn(f"tokbench CPU nearest-codeword kernel unavailable ({_state['error']}); "
                          "using the chunked PyTorch path", stacklevel=2)
    return _state["module"]


def uses_fused_kernel(d: int) -> bool:
    """Whether codewords of length ``d`` go to the fused kernel (when it is available)."""
    return d <= MAX_FUSED_DIM


def nearest_codeword_cpu(z: torch.Tensor, codebook: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused search on CPU tensors (inputs already validated by `tokbench.ops.nearest_codeword`)."""
    module = load_extension()
    if module is None:
        raise RuntimeError("the CPU extension is not available")
    z32, c32 = z.float(), codebook.float()
    if metric == "cosine":
        z32 = torch.nn.functional.normalize(z32, dim=1)
        c32 = torch.nn.functional.normalize(c32, dim=1)
    index, distance = module.nearest_codeword_cpu(z32, c32, True)
    # (For cosine the inputs are unit vectors: |a - b|^2 = 2 - 2 cos, reported as 1 - cos.)
    return index, (distance / 2 if metric == "cosine" else distance)


def extension_status() -> str:
    """Which nearest-codeword path CPU tensors take; never builds anything."""
    if disabled():
        return "disabled by TOKBENCH_DISABLE_CPU_EXT=1 (chunked PyTorch path)"
    if _state["module"] is not None:
        return (f"loaded: {NAME} ({_state['module'].simd_level()} kernel, D <= {MAX_FUSED_DIM}; "
                "chunked GEMM path above)")
    if _state["error"]:
        return f"build failed: {_state['error']} (chunked PyTorch path)"
    return "not built yet: compiled on first use (or run 'tokbench build-ext')"
