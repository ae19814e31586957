"""Tiny helpers for code that must give the same answer on 1 or N ranks."""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place (a no-op on one process); returns ``t``."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_from_rank0(t: torch.Tensor) -> torch.Tensor:
    """Overwrite ``t`` on every rank with rank 0's value (a no-op on one process)."""
    if is_distributed():
        dist.broadcast(t, src=0)
    return t


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` (same shape on every rank) over ranks along dim 0."""
    if not is_distributed():
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)


def init_from_environment(device: str) -> str:
    """Under torchrun (``WORLD_SIZE > 1``): join the process group (Gloo on CPU, NCCL on GPU)
    and return this rank's device (``cuda`` -> ``cuda:LOCAL_RANK``); otherwise ``device``."""
    import os

    if device.startswith("cuda") and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(device)  # NCCL's object collectives use the current device
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return device


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)``; ``(0, 1)`` on one process."""
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every rank (a no-op on one process)."""
    if is_distributed():
        dist.barrier()
