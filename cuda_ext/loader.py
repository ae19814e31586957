"""Build (on first use, or ahead of time with ``tokbench build-ext``) and load the CUDA extension.

The extension is compiled with ``torch.utils.cpp_extension`` (ninja) for the GPU's own
architecture into this environment's own cache folder (`tokbench.cuda_ext.jit`: keyed by
``sys.prefix``, versions, the target architectures and the source hash; the same build lock,
bounded wait and build message as the CPU kernel). ``TOKBENCH_DISABLE_CUDA_EXT=1`` turns it off.
Any build failure falls back to the PyTorch path with one warning saying why; `extension_status`
reports which path is active and never triggers a build by itself.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from tokbench.cuda_ext import jit

HERE = Path(__file__).resolve().parent
SOURCES = [HERE / "nearest_codeword_binding.cpp", HERE / "nearest_codeword_kernel.cu", HERE / "nearest_codeword_tc.cu"]
HEADERS = [HERE / "nearest_codeword.h", HERE / "nearest_codeword_device.cuh"]
NAME = "tokbench_nearest_codeword"
CFLAGS, CUDA_CFLAGS = ["-O3"], ["-O3", "-std=c++17"]  # no fast-math: exact fp32 arithmetic
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


def target_archs(archs: list[str] | None) -> list[str]:
    """``archs``, or the current GPU's compute capability (``["9.0"]``)."""
    if archs:
        return archs
    major, minor = torch.cuda.get_device_capability()
    return [f"{major}.{minor}"]


def spec(archs: list[str]) -> jit.JitSpec:
    return jit.JitSpec(name=NAME, sources=tuple(SOURCES + HEADERS),
                       flags=(*CFLAGS, *CUDA_CFLAGS, "arch=" + ";".join(archs), str(cuda_home())),
                       label="the CUDA nearest-codeword extension", duration="≈1-2 min")


def _compile(folder: Path, archs: list[str], verbose: bool):
    from torch.utils import cpp_extension

    home = cuda_home()
    if home is None:
        raise RuntimeError("no CUDA toolkit with lib/libcudart.so found; set CUDA_HOME")
    os.environ["CUDA_HOME"] = home
    cpp_extension.CUDA_HOME = home  # read at import time by torch; keep both in step
    os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(archs)
    return cpp_extension.load(
        name=NAME, sources=[str(s) for s in SOURCES], extra_include_paths=[str(HERE)], verbose=verbose,
        build_directory=str(folder), extra_cflags=CFLAGS, extra_cuda_cflags=CUDA_CFLAGS,
    )


def build_extension(archs: list[str] | None = None, verbose: bool = False, force: bool = False):
    """The extension (for ``archs`` such as ``["8.0", "9.0"]``, default: this GPU) from this
    environment's cache, compiled into it first if needed."""
    archs = target_archs(archs)
    return jit.load(spec(archs), lambda folder: _compile(folder, archs, verbose), force=force)


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


# Kernels verified in this process: (path, dtype, D, device) -> passed the self-check.
_verified: dict[tuple, bool] = {}
SELF_CHECK_ROWS, SELF_CHECK_CODES = 300, 700  # not multiples of any tile: edges are exercised


def self_check(search, path: str, dtype: torch.dtype, d: int, device: torch.device) -> bool:
    """Whether ``search(z, c)`` agrees with the PyTorch path on a small random problem.

    Run once per (path, dtype, D, device) before a kernel's first real use, so that a kernel
    that is wrong on some GPU or build is never trusted: on disagreement it warns once and
    the caller falls back (tensor cores -> the FMA kernel -> the PyTorch path). Agreement
    means the same index for every row, up to rows whose two best codewords are within
    fp32 rounding of each other, and the same distances to 1e-4.
    """
    key = (path, dtype, d, str(device))
    if key not in _verified:
        from tokbench.ops.nearest_codeword import nearest_codeword_torch

        gen = torch.Generator(device="cpu").manual_seed(d)
        z = torch.randn(SELF_CHECK_ROWS, d, generator=gen).to(device=device, dtype=dtype)
        c = torch.randn(SELF_CHECK_CODES, d, generator=gen).to(device=device, dtype=dtype)
        try:
            idx, dist = search(z, c)
            ref_idx, ref_dist = nearest_codeword_torch(z, c)
            exact = torch.cdist(z.double(), c.double()).square()
            chosen, best = exact.gather(1, idx[:, None].long()), exact.gather(1, ref_idx[:, None])
            same = (idx == ref_idx) | (chosen <= best * (1 + 1e-6)).squeeze(1)
            ok = bool(same.all()) and bool(torch.allclose(dist, ref_dist, rtol=1e-4, atol=1e-5))
            bad = int((~same).sum())
            why = f"{bad} of {SELF_CHECK_ROWS} rows chose another codeword" if bad else "distances differ beyond 1e-4"
        except RuntimeError as err:
            ok, why = False, str(err).splitlines()[0]
        if not ok:
            warnings.warn(f"tokbench CUDA extension: the {path} kernel failed its self-check against the PyTorch "
                          f"path ({dtype}, D={d}: {why}); not using it in this process", stacklevel=3)
        _verified[key] = ok
    return _verified[key]


def uses_tensor_cores(module, z: torch.Tensor) -> bool:
    """fp16/bf16 inputs of a code dimension the tensor-core path takes, on sm_80 or newer."""
    lo, hi = module.tensor_core_dims()
    return (z.dtype in (torch.float16, torch.bfloat16) and lo <= z.shape[1] <= hi
            and torch.cuda.get_device_capability(z.device)[0] >= 8)


def nearest_codeword_cuda(z: torch.Tensor, codebook: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused search on CUDA tensors (inputs already validated by `tokbench.ops.nearest_codeword`).

    Paths, each used only once it has passed `self_check` in this process: tensor cores
    (fp16/bf16, 64 <= D <= 256), the exact FMA kernel, and the chunked PyTorch path for
    codewords longer than the kernel's tiles or when both kernels failed their check.
    """
    from tokbench.ops.nearest_codeword import nearest_codeword_torch

    module = load_extension()
    if module is None:
        raise RuntimeError("the CUDA extension is not available")
    if metric == "cosine":
        z = torch.nn.functional.normalize(z.float(), dim=1)
        codebook = torch.nn.functional.normalize(codebook.float(), dim=1)
    d = z.shape[1]
    search = None
    if uses_tensor_cores(module, z):
        def tensor_cores(a, b):
            return module.nearest_codeword(a, b, True)

        if self_check(tensor_cores, "tensor-core", z.dtype, d, z.device):
            search = tensor_cores
    if search is None and d <= module.max_code_dim():
        # Longer codewords do not fit the shared-memory tiles; the chunked path is GEMM-bound
        # at such D anyway.
        def fma(a, b):
            return module.nearest_codeword(a, b, False)

        if self_check(fma, "FMA", z.dtype, d, z.device):
            search = fma
    if search is None:
        def search(a, b):  # noqa: F811 -- both kernels refused: the PyTorch path on the GPU
            return nearest_codeword_torch(a, b, "l2")

    # (For cosine the inputs are unit vectors now: |a - b|^2 = 2 - 2 cos, reported as 1 - cos.)
    index, distance = search(z, codebook)
    return index, (distance / 2 if metric == "cosine" else distance)


def planned_backend() -> str:
    """The path CUDA tensors will take, without building anything."""
    if disabled() or not torch.cuda.is_available() or _state["error"]:
        return "torch"
    if _state["module"] is not None:
        return "cuda_ext"
    on_disk = jit.state(spec(target_archs(None)))[0]
    return {"built": "cuda_ext", "failed": "torch"}.get(on_disk, "cuda_ext once built (torch if the build fails)")


def extension_status() -> str:
    """Which nearest-codeword path CUDA tensors take (built / not built / disabled / failed); never builds."""
    if disabled():
        return "disabled by TOKBENCH_DISABLE_CUDA_EXT=1 (PyTorch path)"
    if not torch.cuda.is_available():
        return "not built: no CUDA device (PyTorch path)"
    if _state["module"] is not None:
        return f"loaded: {NAME}"
    if _state["error"]:
        return f"failed: {_state['error']} (PyTorch path)"
    built, detail = jit.state(spec(target_archs(None)))
    if built == "built":
        return f"built: {NAME} in {detail} (loaded on first use)"
    if built == "failed":
        return f"failed: {detail} (PyTorch path; 'tokbench build-ext' retries)"
    return "not built: compiled on first use (≈1-2 min), or ahead with 'tokbench build-ext'"
