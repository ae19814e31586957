"""`nearest_codeword`: the one codebook search every quantizer uses.

For each row of ``z (N, D)`` find the nearest row of ``codebook (K, D)``. CUDA tensors go
where `CUDA_REGIMES` (one table, by dtype and D, from measurements) sends them: the fused
CUDA extension (`tokbench.cuda_ext.loader`) or the chunked PyTorch path (fp32 GEMM, or bf16
tensor-core GEMM with an exact re-rank); CPU tensors with D up to
``cpu_loader.MAX_FUSED_DIM`` to the fused CPU kernel (`tokbench.cuda_ext.cpu_loader`, same
numerics, built on first use); everything else, and any tensor whose extension is disabled
or failed to build, to the chunked PyTorch path below. None ever holds the full ``N x K``
distance matrix.

Input checks: shapes, dtypes and devices always; NaN/Inf always on the CPU, but on CUDA
tensors only when ``TOKBENCH_CHECK_FINITE=1`` -- the check reads a flag back from the
device, which would synchronize every search (each training step) with the host.

Numerics of the PyTorch path (exact in fp32, ties to the lowest index):

* the codebook mean is subtracted from both sides first: ``|z|^2 - 2 z.c + |c|^2``
  cancels badly when codewords sit far from the origin;
* ``|z|^2`` is dropped from the ranking (it does not change the argmin);
* ranking runs in fp32 (or on exact bf16 products with fp32 accumulation) with autocast
  and TF32 off; every codeword whose score lies within a
  rigorous bound of the fp32 rounding error of the row's best score is a near-tie, and
  rows with more than one near-tie are re-ranked by the directly computed ``|z - c|^2``
  (lowest index among equal distances); the distance returned is always computed directly;
* no value is read back to the host per chunk: the near-tie rows are gathered once, at the
  end (one synchronisation per search on an accelerator).
"""
from __future__ import annotations

import contextlib
import os

import torch

METRICS = ("l2", "cosine")
# Scores held at once on the PyTorch path (one chunk of rows x K fp32 scores). On a CPU a few
# MiB, so that the passes after the GEMM read from cache; on an accelerator hundreds of MiB,
# so that a search is a handful of large launches, but at most 1/16 of the whole N x K score
# matrix (the unfused `addmm + argmin` holds all of it). `TOKBENCH_NN_CHUNK_BYTES` overrides both.
CPU_CHUNK_BYTES = 4 * 2**20
ACCELERATOR_CHUNK_BYTES = 256 * 2**20
ACCELERATOR_MIN_CHUNK_BYTES = 8 * 2**20
ACCELERATOR_CHUNK_SHARE = 16
RERANK_CHUNK_BYTES = 4 * 2**20  # near-tie re-ranking (rare rows): small steps on every device

# Which implementation searches CUDA tensors, by regime: the first row whose dtype matches and
# whose largest D is >= the codeword length wins. Measured on an H200 (issue #20: fused vs
# `addmm + argmin`): the fused kernel wins in fp32 up to D = 32 (1.65-3.6x) and loses at
# D = 256 (0.07x), and in bf16 it loses from D = 32 (0.70-0.79x). "torch_chunked" is the
# chunked path below in fp32; "torch_gemm_bf16" the same path with the GEMM on bf16 tensor
# cores (fp32 accumulate and output, exact near-tie re-rank). The bf16 rows and the D
# boundaries between the measured points are provisional: rerun
# `benchmarks/nearest_codeword.py --gpu-grid` and move the boundaries to the crossovers.
CUDA_REGIMES: tuple[tuple[torch.dtype, float, str], ...] = (
    (torch.float32, 32, "cuda_ext"),
    (torch.float32, float("inf"), "torch_chunked"),
    (torch.float16, 32, "cuda_ext"),
    (torch.float16, float("inf"), "torch_chunked"),
    (torch.bfloat16, 16, "cuda_ext"),
    (torch.bfloat16, float("inf"), "torch_gemm_bf16"),
)


def cuda_regime(dtype: torch.dtype, d: int) -> str:
    """The `CUDA_REGIMES` choice for searching ``dtype`` codewords of length ``d`` (before
    knowing whether the extension built: "cuda_ext" falls back to "torch_chunked")."""
    for regime_dtype, max_d, backend in CUDA_REGIMES:
        if regime_dtype == dtype and d <= max_d:
            return backend
    return "torch_chunked"


def default_chunk_bytes(device: torch.device, n: int, k: int) -> int:
    """Bytes of scores per chunk of rows on ``device`` for an ``n x k`` search (see the constants)."""
    if "TOKBENCH_NN_CHUNK_BYTES" in os.environ:
        return int(os.environ["TOKBENCH_NN_CHUNK_BYTES"])
    if device.type == "cpu":
        return CPU_CHUNK_BYTES
    share = 4 * n * k // ACCELERATOR_CHUNK_SHARE
    return min(ACCELERATOR_CHUNK_BYTES, max(ACCELERATOR_MIN_CHUNK_BYTES, share))


def _check_finite_on_device(device: torch.device) -> bool:
    """NaN/Inf checks on ``device``: always on the CPU (free), on accelerators only on request."""
    return device.type == "cpu" or os.environ.get("TOKBENCH_CHECK_FINITE") == "1"


def _check_inputs(z: torch.Tensor, codebook: torch.Tensor, metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    for name, t in (("z", z), ("codebook", codebook)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2D, got shape {tuple(t.shape)}; z is (N, D), codebook is (K, D)")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a float tensor (fp32, bf16 or fp16), got {t.dtype}")
    if z.shape[1] != codebook.shape[1]:
        raise ValueError(f"z has dimension {z.shape[1]} but the codebook has {codebook.shape[1]}")
    if codebook.shape[0] == 0:
        raise ValueError("the codebook is empty (K = 0)")
    if z.device != codebook.device:
        raise ValueError(f"z is on {z.device} but the codebook is on {codebook.device}; put both on one device")
    if not _check_finite_on_device(z.device):
        return  # `bool(isfinite(t).all())` would stall the host until the device catches up
    for name, t in (("z", z), ("codebook", codebook)):
        if t.numel() and not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or infinite values")


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _exact_sq_dist(z: torch.Tensor, codewords: torch.Tensor) -> torch.Tensor:
    """``|z_i - c_ij|^2`` for ``z (n, D)`` and candidates ``c (n, m, D)``, in fp32."""
    return (z.unsqueeze(1) - codewords).square().sum(-1)


def _rerank_exact(z32: torch.Tensor, c32: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                  n: int, pairs_per_step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact lowest-index minimum over the candidate pairs ``(rows[i], cols[i])``.

    Distances are computed directly as ``|z - c|^2`` in fp32, ``pairs_per_step`` pairs at a
    time, so that even a row whose whole codebook is tied stays within bounded memory.
    Rows without any pair get ``inf`` and an index of ``int64 max``.
    """
    dist = torch.empty(rows.shape[0], dtype=torch.float32, device=z32.device)
    for s in range(0, rows.shape[0], pairs_per_step):
        r, c = rows[s : s + pairs_per_step], cols[s : s + pairs_per_step]
        dist[s : s + pairs_per_step] = _exact_sq_dist(z32[r], c32[c].unsqueeze(1)).squeeze(1)
    best = torch.full((n,), float("inf"), dtype=torch.float32, device=z32.device)
    best.scatter_reduce_(0, rows, dist, reduce="amin")
    big = torch.iinfo(torch.long).max
    idx = torch.full((n,), big, dtype=torch.long, device=z32.device)
    idx.scatter_reduce_(0, rows, torch.where(dist == best[rows], cols, torch.full_like(cols, big)), reduce="amin")
    return idx, best


@contextlib.contextmanager
def _exact_fp32_matmul(device: torch.device):
    """cuBLAS in full precision for the scores: the near-tie bound assumes fp32 rounding, which
    TF32 (``allow_tf32`` / matmul precision "high") and reduced-precision bf16 reductions break."""
    if device.type != "cuda":
        yield
        return
    flags = torch.backends.cuda.matmul
    saved = flags.allow_tf32, flags.allow_bf16_reduced_precision_reduction
    flags.allow_tf32, flags.allow_bf16_reduced_precision_reduction = False, False
    try:
        yield
    finally:
        flags.allow_tf32, flags.allow_bf16_reduced_precision_reduction = saved


def _gemm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    """``out = a @ b`` in fp32 (``a``, ``b`` fp32, or bf16 with fp32 accumulation and output)."""
    if a.dtype == out.dtype:
        torch.mm(a, b, out=out)
    elif a.is_cuda:
        torch.mm(a, b, out_dtype=out.dtype, out=out)
    else:  # bf16 -> fp32 is exact and so are the products: the same arithmetic as on the GPU
        torch.mm(a.float(), b.float(), out=out)


def _split_bf16(x: torch.Tensor) -> torch.Tensor:
    """``(len(x), 3)`` bf16 parts whose fp32 sum is ``x`` (fp32) exactly: 3 x 8 mantissa bits."""
    hi = x.bfloat16()
    mid = (x - hi.float()).bfloat16()
    lo = (x - hi.float() - mid.float()).bfloat16()
    return torch.stack([hi, mid, lo], dim=1)


def _pick_by_mask(scores: torch.Tensor, margin: torch.Tensor,
                  code_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CPU: value-only passes and GEMVs vectorize, PyTorch's CPU argmin does not. Marks the
    near-ties in place (1.0), counts them, and reads a lone winner's index off a GEMV with
    ``[0, 1, ..., K-1]`` (exact in fp32 while K < 2^24). Returns ``(index, tied)``."""
    threshold = scores.amin(dim=1) + margin
    near = torch.le(scores, threshold.unsqueeze(1), out=scores)
    tied = near.sum(dim=1) > 1.5
    if scores.shape[1] >= 2**24:
        tied.fill_(True)
    return torch.mv(near, code_index).long(), tied


def _pick_by_two_minima(scores: torch.Tensor, margin: torch.Tensor,
                        code_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Accelerators: one min-with-index pass, then the runner-up's value with the winner masked
    out (two reads of the scores and one write per row). Returns ``(index, tied)``."""
    best, index = scores.min(dim=1)
    scores.scatter_(1, index.unsqueeze(1), float("inf"))
    return index, scores.amin(dim=1) <= best + margin


# How a chunk's winners are picked, by device type (anything else: two minima).
PICK_BY_DEVICE = {"cpu": _pick_by_mask}


def nearest_codeword_torch(z: torch.Tensor, codebook: torch.Tensor, metric: str = "l2",
                           chunk_bytes: int | None = None,
                           gemm_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked exact search in PyTorch; see the module docstring for the numerics.

    Per chunk of rows, one GEMM writes the ranking scores ``|c|^2 - 2 z.c`` into a reused
    buffer (``|c|^2`` rides along as extra columns of ones in z, so there is no separate bias
    pass), then a device-specific pick (`_pick_by_mask` on the CPU, `_pick_by_two_minima`
    elsewhere) gives each row's winner and whether another codeword lies within the rigorous
    fp32 error bound of it. Nothing is read back to the host per chunk: the rows with near-ties
    (rare, plus exact duplicates) are gathered once at the end and re-ranked over all their
    candidates by directly computed distances. The score buffer is the only ``rows x K``
    allocation; ``chunk_bytes`` (default `default_chunk_bytes`) sets its size.

    ``gemm_dtype=torch.bfloat16`` (bf16 ``z`` and codebook, l2 only) runs the GEMM on bf16
    operands with fp32 accumulation: the products of bf16 values are exact in fp32, so the same
    error bound holds without centering, and ``|c|^2`` rides along as three bf16 parts.
    """
    if gemm_dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"gemm_dtype must be torch.float32 or torch.bfloat16, got {gemm_dtype}")
    low = gemm_dtype == torch.bfloat16
    if low and (metric != "l2" or z.dtype != torch.bfloat16 or codebook.dtype != torch.bfloat16):
        raise ValueError("the bf16 GEMM needs bf16 z and codebook and the l2 metric "
                         f"(got {z.dtype}, {codebook.dtype}, {metric!r})")
    z32 = z.float()
    c32 = codebook.float()
    if metric == "cosine":
        z32, c32 = _normalize(z32), _normalize(c32)
    N, K, D = z32.shape[0], c32.shape[0], z32.shape[1]
    indices = torch.empty(N, dtype=torch.long, device=z.device)
    if N == 0:
        return indices, torch.empty(N, dtype=torch.float32, device=z.device)
    if low:  # bf16 values: centering would round them, and their products need no help
        zc, cc = z32, c32
    else:  # centering changes no distance but keeps the expansion well conditioned
        center = c32.mean(dim=0, keepdim=True)
        zc, cc = z32 - center, c32 - center
    cc_norm = cc.norm(dim=1)
    # scores = [zc, 1 (x extra)] @ [-2 cc, |cc|^2 (split into `extra` parts)]^T
    sq_norms = cc_norm.square()
    code_aug = torch.cat([-2 * cc, _split_bf16(sq_norms).float() if low else sq_norms.unsqueeze(1)], dim=1)
    code_aug = code_aug.T.contiguous().to(gemm_dtype)  # (D + extra, K); -2 c is exact in bf16
    extra = code_aug.shape[0] - D
    # |computed - exact score| <= tol (|zc| + max|cc|)^2 covers the rounding of the centering,
    # of the D + extra term dot product and of the norms, with a safety factor of ~2.
    tol = (2 * D + 16) * 2.0**-24
    margin_N = 2 * tol * (zc.norm(dim=1) + cc_norm.max()).square()  # the winner and a rival: one bound each
    pick = PICK_BY_DEVICE.get(z.device.type, _pick_by_two_minima)
    code_index = torch.arange(K, device=z.device, dtype=torch.float32)
    chunk_bytes = chunk_bytes or default_chunk_bytes(z.device, N, K)
    rows = max(1, min(N, chunk_bytes // (4 * K)))
    scores_buf = torch.empty(rows, K, dtype=torch.float32, device=z.device)
    z_aug = torch.ones(rows, D + extra, dtype=gemm_dtype, device=z.device)
    tied_N = torch.empty(N, dtype=torch.bool, device=z.device)
    with _exact_fp32_matmul(z.device):
        for start in range(0, N, rows):
            n = min(rows, N - start)
            z_aug[:n, :D] = zc[start : start + n]
            _gemm(z_aug[:n], code_aug, scores_buf[:n])
            indices[start : start + n], tied_N[start : start + n] = pick(
                scores_buf[:n], margin_N[start : start + n], code_index)
        del scores_buf
        tied = tied_N.nonzero().squeeze(1)  # the search's one host synchronisation
        if tied.numel():
            indices[tied] = _rerank_rows(z32[tied], c32, zc[tied], code_aug, margin_N[tied])
    # The returned distance is computed directly, never read off the expansion.
    distances = _exact_sq_dist(z32, c32[indices].unsqueeze(1)).squeeze(1)
    if metric == "cosine":
        distances = distances / 2  # |a - b|^2 = 2 - 2cos for unit vectors: report 1 - cos
    return indices, distances


def _rerank_rows(z32: torch.Tensor, c32: torch.Tensor, zc: torch.Tensor, code_aug: torch.Tensor,
                 margin: torch.Tensor) -> torch.Tensor:
    """Exact winners of rows flagged as near-ties: their scores again (in small chunks; any
    rounding order stays within the bound, so every exact optimum is among the candidates),
    then `_rerank_exact` over every codeword within the margin of the row's best score."""
    T, K, D = z32.shape[0], c32.shape[0], z32.shape[1]
    rows = max(1, RERANK_CHUNK_BYTES // (4 * K))
    out = torch.empty(T, dtype=torch.long, device=z32.device)
    z_aug = torch.ones(min(rows, T), code_aug.shape[0], dtype=code_aug.dtype, device=z32.device)
    scores_buf = torch.empty(min(rows, T), K, dtype=torch.float32, device=z32.device)
    for start in range(0, T, rows):
        n = min(rows, T - start)
        z_aug[:n, :D] = zc[start : start + n]
        scores = scores_buf[:n]
        _gemm(z_aug[:n], code_aug, scores)
        near = scores <= (scores.amin(dim=1) + margin[start : start + n]).unsqueeze(1)
        t_rows, t_cols = near.nonzero(as_tuple=True)
        out[start : start + n], _ = _rerank_exact(z32[start : start + n], c32, t_rows, t_cols, n,
                                                  pairs_per_step=max(1, RERANK_CHUNK_BYTES // (4 * (D + 1))))
    return out


def _cuda_extension_search():
    """The CUDA extension's entry point, or None when it is disabled or failed to build."""
    if os.environ.get("TOKBENCH_DISABLE_CUDA_EXT") == "1":
        return None
    try:
        from tokbench.cuda_ext import loader
    except ImportError:
        return None
    return loader.nearest_codeword_cuda if loader.load_extension() is not None else None


def _cpu_extension_search(d: int):
    """The fused CPU kernel's entry point for codewords of length ``d``, or None (chunked path)."""
    try:
        from tokbench.cuda_ext import cpu_loader
    except ImportError:
        return None
    if not cpu_loader.uses_fused_kernel(d) or cpu_loader.load_extension() is None:
        return None
    return cpu_loader.nearest_codeword_cpu


def active_backend(device: torch.device | str, d: int = 8, dtype: torch.dtype = torch.float32) -> str:
    """Which implementation `nearest_codeword` uses for ``dtype`` tensors on ``device`` with
    codewords of length ``d``: "cuda_ext", "cpu_ext", "torch_chunked" or "torch_gemm_bf16".

    May build the extension for that device (once per process, cached across processes).
    """
    kind = torch.device(device).type
    if kind == "cuda":
        backend = cuda_regime(dtype, d)
        if backend != "cuda_ext":
            return backend
        return "cuda_ext" if _cuda_extension_search() is not None else "torch_chunked"
    if kind == "cpu" and _cpu_extension_search(d) is not None:
        return "cpu_ext"
    return "torch_chunked"


def nearest_codeword(z: torch.Tensor, codebook: torch.Tensor, metric: str = "l2") -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest codeword of each row of ``z``.

    Args:
        z: ``(N, D)`` vectors, fp32/bf16/fp16.
        codebook: ``(K, D)`` codewords on the same device.
        metric: ``"l2"`` (squared Euclidean) or ``"cosine"`` (on l2-normalized vectors).

    Returns:
        ``indices`` int64 ``(N,)`` (ties go to the lowest index) and ``distances`` fp32
        ``(N,)``: ``|z - c|^2`` for l2, ``1 - cos(z, c)`` for cosine.
    """
    _check_inputs(z, codebook, metric)
    z, codebook = z.detach(), codebook.detach()
    with torch.no_grad(), torch.autocast(device_type=z.device.type, enabled=False):
        if z.is_cuda:
            # Under autocast z is often bf16 while the codebook is fp32: search in the more
            # precise of the two.
            dtype = torch.promote_types(z.dtype, codebook.dtype)
            backend = cuda_regime(dtype, z.shape[1])
            if backend == "torch_gemm_bf16" and metric == "l2":
                return nearest_codeword_torch(z.to(dtype), codebook.to(dtype), metric, gemm_dtype=torch.bfloat16)
            search = _cuda_extension_search() if backend == "cuda_ext" else None
            if search is not None:
                return search(z.to(dtype), codebook.to(dtype), metric)
        elif z.device.type == "cpu":
            search = _cpu_extension_search(z.shape[1])
            if search is not None:
                return search(z, codebook, metric)
        return nearest_codeword_torch(z, codebook, metric)
