"""`nearest_codeword`: the one codebook search every quantizer uses.

For each row of ``z (N, D)`` find the nearest row of ``codebook (K, D)``. CUDA tensors
go to the fused extension (`tokbench.cuda_ext`), everything else to the chunked PyTorch
path below. Neither ever holds the full ``N x K`` distance matrix.

Numerics of the PyTorch path (exact in fp32, ties to the lowest index):

* the codebook mean is subtracted from both sides first: ``|z|^2 - 2 z.c + |c|^2``
  cancels badly when codewords sit far from the origin;
* ``|z|^2`` is dropped from the ranking (it does not change the argmin);
* ranking runs in fp32 with autocast off; the best few candidates of each row (plus the
  first arg-min, which carries the lowest index among exact ties) are then re-ranked
  by the directly computed ``|z - c|^2``, which is also the distance returned.
"""
from __future__ import annotations

import os

import torch

METRICS = ("l2", "cosine")
# Rows of scores held at once on the PyTorch path: bounded memory whatever N is.
DEFAULT_CHUNK_BYTES = int(os.environ.get("TOKBENCH_NN_CHUNK_BYTES", 32 * 2**20))
RERANK_CANDIDATES = 4


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
    for name, t in (("z", z), ("codebook", codebook)):
        if t.numel() and not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or infinite values")


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _exact_sq_dist(z: torch.Tensor, codewords: torch.Tensor) -> torch.Tensor:
    """``|z_i - c_ij|^2`` for ``z (n, D)`` and candidates ``c (n, m, D)``, in fp32."""
    return (z.unsqueeze(1) - codewords).square().sum(-1)


def _pick_lowest_index_min(dist_nm: torch.Tensor, idx_nm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    best = dist_nm.min(dim=1, keepdim=True).values
    big = torch.iinfo(torch.long).max
    idx = torch.where(dist_nm == best, idx_nm, torch.full_like(idx_nm, big)).min(dim=1).values
    return idx, best.squeeze(1)


def nearest_codeword_torch(z: torch.Tensor, codebook: torch.Tensor, metric: str = "l2",
                           chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked exact search in PyTorch; see the module docstring for the numerics."""
    z32 = z.float()
    c32 = codebook.float()
    if metric == "cosine":
        z32, c32 = _normalize(z32), _normalize(c32)
    N, K = z32.shape[0], c32.shape[0]
    indices = torch.empty(N, dtype=torch.long, device=z.device)
    distances = torch.empty(N, dtype=torch.float32, device=z.device)
    if N == 0:
        return indices, distances
    # Centering changes no distance but keeps the expansion well conditioned.
    center = c32.mean(dim=0, keepdim=True)
    zc, cc = z32 - center, c32 - center
    c_sqnorm = cc.square().sum(1)
    rows = max(1, min(N, chunk_bytes // (4 * K)))
    buffer = torch.empty(rows, K, dtype=torch.float32, device=z.device)
    m = min(RERANK_CANDIDATES, K)
    for start in range(0, N, rows):
        z_n = zc[start : start + rows]
        n = z_n.shape[0]
        scores = buffer[:n]
        # scores = |c|^2 - 2 z.c  (the |z|^2 term is the same for every codeword)
        torch.addmm(c_sqnorm.expand(n, K), z_n, cc.T, beta=1.0, alpha=-2.0, out=scores)
        cand = torch.cat([scores.argmin(dim=1, keepdim=True), scores.topk(m, dim=1, largest=False).indices], dim=1)
        dist = _exact_sq_dist(z32[start : start + n], c32[cand])
        idx, best = _pick_lowest_index_min(dist, cand)
        indices[start : start + n] = idx
        distances[start : start + n] = best
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


def active_backend(device: torch.device | str) -> str:
    """Which implementation `nearest_codeword` uses for tensors on ``device``."""
    if torch.device(device).type == "cuda" and _cuda_extension_search() is not None:
        return "cuda_ext"
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
                return search(z, codebook, metric)
        return nearest_codeword_torch(z.detach(), codebook.detach(), metric)
