"""Model FLOPs and model FLOPs utilisation (MFU) for the throughput benchmarks.

FLOPs are counted, not estimated by formula: `torch.utils.flop_counter.FlopCounterMode`
records every matmul, convolution and attention of one step (forward and backward), so the
count follows the model's real shapes. MFU = counted FLOPs per second / the device's peak.

Peaks (dense, FLOP/s) by device name and compute precision. ``measured``: what a large GEMM
reaches on that card (issue #20: 790 TFLOP/s bf16 on an H200); ``datasheet`` otherwise. A CPU
has no entry: pass ``--peak-tflops`` to get an MFU there.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.utils.flop_counter import FlopCounterMode

PEAK_TFLOPS = {
    "H200": {"bf16": 790.0, "fp32": 67.0},  # bf16 measured (issue #20); fp32 datasheet (no tensor cores)
    "H100": {"bf16": 989.0, "fp32": 67.0},  # datasheet, SXM5 dense
    "A100": {"bf16": 312.0, "fp32": 19.5},  # datasheet, dense
}


def precision_kind(precision: str | torch.dtype) -> str:
    """``"bf16"`` for bf16/fp16 compute (Lightning's ``bf16-mixed``, ``16-mixed``; a dtype), else ``"fp32"``."""
    text = str(precision)
    return "bf16" if any(s in text for s in ("bf16", "bfloat16", "16-mixed", "float16")) else "fp32"


def peak_flops(device: torch.device | str, precision: str | torch.dtype, override_tflops: float | None = None) -> float | None:
    """Peak FLOP/s of ``device`` at ``precision``: ``override_tflops`` when given, else the table's
    entry for a CUDA device's name, else None (no MFU)."""
    if override_tflops:
        return override_tflops * 1e12
    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_TFLOPS.items():
        if key in name:
            return peaks[precision_kind(precision)] * 1e12
    return None


@contextmanager
def counted_flops():
    """``with counted_flops() as count: ...`` then ``count()``: FLOPs of what ran inside."""
    mode = FlopCounterMode(display=False)
    with mode:
        yield lambda: mode.get_total_flops()


def throughput_columns(flops_per_step: float, seconds_per_step: float, peak: float | None) -> dict:
    """``GFLOP_per_step``, ``TFLOP_per_s`` and, with a peak, ``MFU_%``."""
    row = {"GFLOP_per_step": flops_per_step / 1e9, "TFLOP_per_s": flops_per_step / seconds_per_step / 1e12}
    if peak:
        row["MFU_%"] = 100 * flops_per_step / seconds_per_step / peak
    return row
