"""Build (on first use, or ahead of time with ``tokbench build-ext``) and load the CUDA extension.

The extension is compiled with ``torch.utils.cpp_extension`` (ninja) into PyTorch's
standard extensions cache for the GPU's own architecture. ``TOKBENCH_DISABLE_CUDA_EXT=1``
turns it off. Any build failure falls back to the PyTorch path with one warning saying why;
`extension_status` reports which path is active and never triggers a build by itself.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SOURCES = [HERE / "nearest_codeword_binding.cpp", HERE / "nearest_codeword_kernel.cu"]
NAME = "tokbench_nearest_codeword"
_state: dict = {"module": None, "error": None, "tried": False}


def cuda_home() -> str | None:
    """A CUDA toolkit folder that holds ``lib/libcudart.so`` or ``lib64/libcudart.so``.

    PyTorch's own guess (the folder above ``nvcc``) can point at a toolkit without the
    runtime library; prefer ``CUDA_HOME``/``CUDA_PATH``, then the usual install folders.
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda",
                  *sorted(map(str, Path("/usr/local").glob("cuda-*")), reverse=True)]
    for c in filter(None, candidates):
        if any((Path(c) / lib / "libcudart.so").exists() for lib in ("lib", "lib64", "targets/x86_64-linux/lib")):
            return c
    return None


def disabled() -> bool:
    return os.environ.get("TOKBENCH_DISABLE_CUDA_EXT") == "1"


def build_extension(archs: list[str] | None = None, verbose: bool = False):
    """Compile and import the extension (for ``archs`` such as ``["8.0", "9.0"]``, default: this GPU)."""
    from torch.utils import cpp_extension

    home = cuda_home()
    if home is None:
        raise RuntimeError("no CUDA toolkit with lib/libcudart.so found; set CUDA_HOME")
    os.environ["CUDA_HOME"] = home
    cpp_extension.CUDA_HOME = home  # read at import time by torch; keep both in step
    if archs:
        os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(archs)
    return cpp_extension.load(
        name=NAME, sources=[str(s) for s in SOURCES], extra_include_paths=[str(HERE)], verbose=verbose,
        extra_cflags=["-O3"], extra_cuda_cflags=["-O3", "-std=c++17"],  # no fast-math: exact fp32 arithmetic
    )


def load_extension():
    """The compiled module, or None (disabled, no CUDA device, or a failed build -- warned once)."""
    if disabled() or not torch.cuda.is_available():
        return None
    if not _state["tried"]:
        _state["tried"] = True
        try:
            _state["module"] = build_extension()
        except Exception as err:  # any build problem: fall back, say why once
            _state["error"] = f"{type(err).__name__}: {err}".splitlines()[0]
            warnings.warn(f"tokbench CUDA extension unavailable ({_state['error']}); using the PyTorch path", stacklevel=2)
    return _state["module"]


def nearest_codeword_cuda(z: torch.Tensor, codebook: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused search on CUDA tensors (inputs already validated by `tokbench.ops.nearest_codeword`)."""
    module = load_extension()
    if module is None:
        raise RuntimeError("the CUDA extension is not available")
    if z.shape[1] > module.max_code_dim():
        # Codewords this long do not fit the shared-memory tiles; the chunked path is
        # GEMM-bound at such D anyway.
        from tokbench.ops.nearest_codeword import nearest_codeword_torch

        return nearest_codeword_torch(z, codebook, metric)
    if metric == "cosine":
        z = torch.nn.functional.normalize(z.float(), dim=1)
        codebook = torch.nn.functional.normalize(codebook.float(), dim=1)
    index, distance = module.nearest_codeword(z, codebook)
    return index, (distance / 2 if metric == "cosine" else distance)


def extension_status() -> str:
    """Which nearest-codeword path CUDA tensors take; never builds anything."""
    if disabled():
        return "disabled by TOKBENCH_DISABLE_CUDA_EXT=1 (PyTorch path)"
    if not torch.cuda.is_available():
        return "not built: no CUDA device (PyTorch path)"
    if _state["module"] is not None:
        return f"loaded: {NAME} from the torch extensions cache"
    if _state["error"]:
        return f"build failed: {_state['error']} (PyTorch path)"
    return "not built yet: compiled on first use (or run 'tokbench build-ext')"
