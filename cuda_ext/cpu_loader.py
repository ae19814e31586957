"""Build (on first use, or ahead of time with ``tokbench build-ext``/``make setup``) and load the fused CPU kernel.

``nearest_codeword_cpu.cpp`` is compiled by the system C++ compiler through
``torch.utils.cpp_extension`` (ninja, no CUDA) into this environment's own cache folder
(`tokbench.cuda_ext.jit`: keyed by ``sys.prefix``, versions and the source hash), once; later
processes import it directly. ``TOKBENCH_DISABLE_CPU_EXT=1`` turns it off. A missing compiler, a
failed build or a build lock held too long by another process falls back to the chunked PyTorch
path with one warning saying why; `extension_status` reports the state and never builds.
``TOKBENCH_CPU_SIMD=avx512|avx2|generic`` forces a micro-kernel (default: the kernel's choice for this CPU).
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch

from tokbench.cuda_ext import jit

HERE = Path(__file__).resolve().parent
SOURCES = [HERE / "nearest_codeword_cpu.cpp"]
NAME = "tokbench_nearest_codeword_cpu"
# -fopenmp: at::parallel_for is a header template that needs it to run on several threads.
# No -ffast-math and no -march: exact IEEE fp32, and the SIMD kernel is chosen at run time.
CFLAGS = ["-O3", "-fopenmp"]
SIMD_CHOICES = ("auto", "avx512", "avx2", "generic")
# Codeword lengths up to which the fused kernel beats the chunked GEMM path on the CPU
# (BENCHMARKS.md: faster than MKL-GEMM chunked path at every D measured, 8 to 256; beyond 256
# unmeasured, so the GEMM path keeps it).
MAX_FUSED_DIM = int(os.environ.get("TOKBENCH_CPU_EXT_MAX_DIM", 256))
_state: dict = {"module": None, "error": None, "tried": False}


def disabled() -> bool:
    return os.environ.get("TOKBENCH_DISABLE_CPU_EXT") == "1"


def spec() -> jit.JitSpec:
    return jit.JitSpec(name=NAME, sources=tuple(SOURCES), flags=tuple(CFLAGS), label="the fused CPU kernel",
                       duration="≈1-2 min")


def simd_choice() -> str:
    """The micro-kernel to run: ``TOKBENCH_CPU_SIMD`` (tests and benchmarks force each), default "auto"."""
    choice = os.environ.get("TOKBENCH_CPU_SIMD", "auto") or "auto"
    if choice not in SIMD_CHOICES:
        raise ValueError(f"TOKBENCH_CPU_SIMD must be one of {', '.join(SIMD_CHOICES)}, got {choice!r}")
    return choice


def _compile(folder: Path, verbose: bool):
    # Importing cpp_extension on a machine without CUDA logs "No CUDA runtime is found": noise here.
    cpp_logger = logging.getLogger("torch.utils.cpp_extension")
    level = cpp_logger.level
    cpp_logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        cpp_logger.setLevel(level)
    return cpp_extension.load(name=NAME, sources=[str(s) for s in SOURCES], build_directory=str(folder),
                              verbose=verbose, extra_cflags=CFLAGS, extra_ldflags=["-fopenmp"])


def build_extension(verbose: bool = False, force: bool = False):
    """The CPU extension from this environment's cache, compiled into it first if needed."""
    return jit.load(spec(), lambda folder: _compile(folder, verbose), force=force)


def load_extension():
    """The compiled module, or None (disabled, or a failed build -- warned once)."""
    if disabled():
        return None
    if not _state["tried"]:
        _state["tried"] = True
        try:
            _state["module"] = build_extension()
        except Exception as err:  # no compiler, a compile error, a lock held too long: fall back, say why once
            _state["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
            warnings.warn(f"tokbench CPU nearest-codeword kernel unavailable ({_state['error']}); "
                          "using the chunked PyTorch path", stacklevel=2)
    return _state["module"]


def uses_fused_kernel(d: int) -> bool:
    """Whether codewords of length ``d`` go to the fused kernel (when it is available)."""
    return d <= MAX_FUSED_DIM


def planned_backend(d: int) -> str:
    """The path CPU tensors with codewords of length ``d`` will take, without building anything."""
    if disabled() or not uses_fused_kernel(d) or _state["error"]:
        return "torch_chunked"
    if _state["module"] is not None:
        return "cpu_ext"
    on_disk = jit.state(spec())[0]
    return {"built": "cpu_ext", "failed": "torch_chunked"}.get(on_disk, "cpu_ext once built (torch_chunked if the build fails)")


def nearest_codeword_cpu(z: torch.Tensor, codebook: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused search on CPU tensors (inputs already validated by `tokbench.ops.nearest_codeword`)."""
    module = load_extension()
    if module is None:
        raise RuntimeError("the CPU extension is not available")
    z32, c32 = z.float(), codebook.float()
    if metric == "cosine":
        z32 = torch.nn.functional.normalize(z32, dim=1)
        c32 = torch.nn.functional.normalize(c32, dim=1)
    index, distance = module.nearest_codeword_cpu(z32, c32, simd_choice())
    # (For cosine the inputs are unit vectors: |a - b|^2 = 2 - 2 cos, reported as 1 - cos.)
    return index, (distance / 2 if metric == "cosine" else distance)


def extension_status() -> str:
    """Which nearest-codeword path CPU tensors take (built / not built / disabled / failed); never builds."""
    if disabled():
        return "disabled by TOKBENCH_DISABLE_CPU_EXT=1 (chunked PyTorch path)"
    if _state["module"] is not None:
        level = simd_choice()
        kernel = _state["module"].simd_level() if level == "auto" else f"{level} (TOKBENCH_CPU_SIMD)"
        return f"loaded: {NAME} ({kernel} kernel, D <= {MAX_FUSED_DIM}; chunked GEMM path above)"
    if _state["error"]:
        return f"failed: {_state['error']} (chunked PyTorch path)"
    built, detail = jit.state(spec())
    if built == "built":
        return f"built: {NAME} in {detail} (loaded on first use)"
    if built == "failed":
        return f"failed: {detail} (chunked PyTorch path; 'tokbench build-ext' retries)"
    return "not built: compiled on first use (≈1-2 min), or ahead with 'make setup' / 'tokbench build-ext'"
