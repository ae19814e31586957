"""`nearest_codeword`: the one codebook search every quantizer uses.

For each row of ``z (N, D)`` find the nearest row of ``codebook (K, D)``. CUDA tensors
go to the fused CUDA extension (`tokbench.cuda_ext.loader`); CPU tensors with D up to
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
* ranking runs in fp32 with autocast off; every codeword whose score lies within a
  rigorous bound of the fp32 rounding error of the row's best score is a near-tie, and
  rows with more than one near-tie are re-ranked by the directly computed ``|z - c|^2``
  (lowest index among equal distances), which is also the distance returned.
"""
from __future__ import annotations

import os

import torch

METRICS = ("l2", "cosine")
# Scores held at once on the PyTorch path: bounded memory whatever N is, and small
# enough (4 MiB) that the min passes after the GEMM read from cache.
DEFAULT_CHUNK_BYTES = int(os.environ.get("TOKBENCH_NN_CHUNK_BYTES", 4 * 2**20))


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


def nearest_codeword_torch(z: torch.Tensor, codebook: torch.Tensor, metric: str = "l2",
                           chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked exact search in PyTorch; see the module docstring for the numerics.

    Per chunk of rows: one GEMM writes the ranking scores ``|c|^2 - 2 z.c`` into a reused
    buffer (``|c|^2`` rides along as an extra column of ones in z, so there is no separate
    bias pass), a value-only pass takes the row minimum, an in-place compare marks the
    codewords within a rigorous fp32 error bound of it, a row sum counts them and a GEMV
    reads off the index of a lone winner. Only rows with several near-ties (rare, plus
    exact duplicates) are re-ranked, over all of them, by directly computed distances.
    The score buffer is the only ``rows x K`` allocation per chunk.
    """
    z32 = z.float()
    c32 = codebook.float()
    if metric == "cosine":
        z32, c32 = _normalize(z32), _normalize(c32)
    N, K, D = z32.shape[0], c32.shape[0], z32.shape[1]
    indices = torch.empty(N, dtype=torch.long, device=z.device)
    distances = torch.empty(N, dtype=torch.float32, device=z.device)
    if N == 0:
        return indices, distances
    # Centering changes no distance but keeps the expansion well conditioned.
    center = c32.mean(dim=0, keepdim=True)
    zc, cc = z32 - center, c32 - center
    cc_norm = cc.norm(dim=1)
    # scores = [zc, 1] @ [-2 cc, |cc|^2]^T
    code_aug = torch.cat([-2 * cc, cc_norm.square().unsqueeze(1)], dim=1).T.contiguous()  # (D+1, K)
    # |computed - exact score| <= tol (|zc| + max|cc|)^2 covers the rounding of the centering,
    # of the D+1 term dot product and of the norms, with a safety factor of ~2.
    tol = (2 * D + 16) * 2.0**-24
    z_bound = tol * (zc.norm(dim=1) + cc_norm.max()).square()
    rows = max(1, min(N, chunk_bytes // (4 * K)))
    scores_buf = torch.empty(rows, K, dtype=torch.float32, device=z.device)
    z_aug = torch.ones(rows, D + 1, dtype=torch.float32, device=z.device)
    # A GEMV of a row's 0/1 near-tie mask with [0, 1, ..., K-1] gives, when the row has one
    # near-tie, its index (exact in fp32 while K < 2^24). (A single (K, 2) GEMM for count and
    # index together was 10x slower on CPU than this GEMV plus a row sum.)
    code_index = torch.arange(K, device=z.device, dtype=torch.float32)
    for start in range(0, N, rows):
        n = min(rows, N - start)
        scores = scores_buf[:n]
        z_aug[:n, :D] = zc[start : start + n]
        torch.mm(z_aug[:n], code_aug, out=scores)
        # Value-only reductions and GEMMs vectorize; PyTorch's CPU argmin does not.
        # Both the minimum and a rival carry at most one bound of error each.
        threshold = scores.amin(dim=1) + 2 * z_bound[start : start + n]
        near = torch.le(scores, threshold.unsqueeze(1), out=scores)  # in place: 1.0 where a near-tie
        count = near.sum(dim=1)
        idx = torch.mv(near, code_index).long()
        tied = (count > 1.5).nonzero().squeeze(1) if K < 2**24 else torch.arange(n, device=z.device)
        if tied.numel():
            t_rows, t_cols = (near[tied] > 0.5).nonzero(as_tuple=True)
            t_idx, _ = _rerank_exact(z32[start : start + n][tied], c32, t_rows, t_cols, tied.numel(),
                                     pairs_per_step=max(1, chunk_bytes // (4 * (D + 1))))
            idx[tied] = t_idx
        indices[start : start + n] = idx
        # The returned distance is computed directly, never read off the expansion.
        distances[start : start + n] = _exact_sq_dist(z32[start : start + n], c32[idx].unsqueeze(1)).squeeze(1)
    if metric == "cosine":
        distances = distances / 2  # |a - b|^2 = 2 - 2cos for unit vectors: report 1 - cos
    return indices, distances


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


def active_backend(device: torch.device | str, d: int = 8) -> str:
    """Which implementation `nearest_codeword` uses for tensors on ``device`` with codewords of length ``d``.

    May build the extension for that device (once per process, cached across processes).
    """
    kind = torch.device(device).type
    if kind == "cuda" and _cuda_extension_search() is not None:
        return "cuda_ext"
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
    with torch.no_grad(), torch.autocast(device_type=z.device.type, enabled=False):
        if z.is_cuda:
            search = _cuda_extension_search()
            if search is not None:
                # Under autocast z is often bf16 while the codebook is fp32: the kernel
                # takes one dtype, so search in the more precise of the two.
                dtype = torch.promote_types(z.dtype, codebook.dtype)
                return search(z.detach().to(dtype), codebook.detach().to(dtype), metric)
        elif z.device.type == "cpu":
            search = _cpu_extension_search(z.shape[1])
            if search is not None:
                return search(z.detach(), codebook.detach(), metric)
        return nearest_codeword_torch(z.detach(), codebook.detach(), metric)
