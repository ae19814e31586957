"""Nearest-codeword search: the fused kernels against the unfused PyTorch ways and faiss.

    python benchmarks/nearest_codeword.py            # full grid (GPU if present)
    python benchmarks/nearest_codeword.py --quick    # a small grid (CPU friendly)
    python benchmarks/nearest_codeword.py --cpu-grid --threads 1 --paths chunked,fused_cpu,faiss --check
    python benchmarks/nearest_codeword.py --gpu-grid # N in {65536, 262144}, K in {4096, 16384}, D in {8, 32, 256}

Each path is timed (CUDA events on GPU, perf_counter on CPU; warm-up, then the median and
the minimum of the repeats: on a shared machine the minimum is the reproducible one) with
its peak extra memory on GPU. Paths: ``fused`` (the CUDA extension called directly; GPU
only), ``dispatch`` (`nearest_codeword`, which picks by ``CUDA_REGIMES``; GPU only),
``chunked_bf16`` (the chunked path with its GEMM on bf16 tensor cores; bf16 rows only),
``fused_cpu`` (the fused CPU kernel; CPU only), ``cdist`` (torch.cdist + argmin),
``expanded`` (|c|^2 - 2 z c^T + argmin in one matmul), ``chunked`` (tokbench's PyTorch
path), and faiss-cpu / pykeops where installed (CPU). ``--check`` counts, per path, the
rows (of the first 2,048) whose index differs from the float64 reference (lowest index among equal distances).
Ratios are against the fastest unfused path of the same row, and faiss against the fused
CPU kernel; on GPU the fused path's fraction of the card's peaks is printed as well (2 N K D FLOPs against the dense peak of the dtype, and the
bytes it must move against the HBM bandwidth: whichever is higher is the bound it is near),
and its peak extra memory as a percentage of the smallest unfused path's.
"""
from __future__ import annotations

import argparse
import statistics
import time

import pandas as pd
import torch

from tokbench.ops import nearest_codeword, nearest_codeword_torch

PEAK_TFLOPS = {"H100": {torch.float32: 67.0, torch.bfloat16: 989.0, torch.float16: 989.0},
               "H200": {torch.float32: 67.0, torch.bfloat16: 989.0, torch.float16: 989.0}}
# HBM bandwidth, TB/s (H100 SXM5: 3.35; H200: 4.8).
PEAK_TBPS = {"H100": 3.35, "H200": 4.8}


def paths(device: str):
    def cdist(z, c):
        return torch.cdist(z, c).argmin(1)

    def expanded(z, c):
        return torch.addmm(c.square().sum(1), z, c.T, alpha=-2).argmin(1)

    def chunked_bf16(z, c):
        return nearest_codeword_torch(z, c, gemm_dtype=torch.bfloat16)[0]

    out = {"cdist": cdist, "expanded": expanded, "chunked": lambda z, c: nearest_codeword_torch(z, c)[0],
           "chunked_bf16": chunked_bf16}
    if device == "cuda":
        from tokbench.cuda_ext import loader

        if loader.load_extension() is not None:  # the kernel itself, whatever the dispatch picks
            out["fused"] = lambda z, c: loader.nearest_codeword_cuda(z, c, "l2")[0]
        out["dispatch"] = lambda z, c: nearest_codeword(z, c)[0]  # what the quantizers get (CUDA_REGIMES)
    else:
        from tokbench.cuda_ext import cpu_loader

        module = cpu_loader.load_extension()
        if module is not None:  # called directly: the dispatch by D is measured here, not assumed
            out["fused_cpu"] = lambda z, c: module.nearest_codeword_cpu(z, c, cpu_loader.simd_choice())[0]
        try:
            import faiss

            def faiss_search(z, c):
                index = faiss.IndexFlatL2(c.shape[1])
                index.add(c.float().numpy())
                return index.search(z.float().numpy(), 1)[1]

            out["faiss"] = faiss_search
        except ImportError:
            pass
    try:  # KeOps: a symbolic N x K reduction compiled to a fused kernel (CPU or GPU)
        from pykeops.torch import LazyTensor

        def keops(z, c):
            z_i, c_j = LazyTensor(z.float()[:, None, :].contiguous()), LazyTensor(c.float()[None, :, :].contiguous())
            return ((z_i - c_j) ** 2).sum(-1).argmin(dim=1).view(-1)

        out["pykeops"] = keops
    except ImportError:
        pass
    return out


CHECK_ROWS = 2048  # rows checked against the float64 reference (a direct float64 scan is slow)


def reference_index(z: torch.Tensor, c: torch.Tensor, rows: int = 1024) -> torch.Tensor:
    """float64 brute force, direct differences (no expansion), lowest index among equal distances."""
    c64 = c.double().cpu()
    out = []
    for s in range(0, z.shape[0], rows):
        d = torch.cdist(z[s : s + rows].double().cpu(), c64, compute_mode="donot_use_mm_for_euclid_dist")
        out.append(d.argmin(1))
    return torch.cat(out)


def time_it(fn, z, c, repeats: int, device: str) -> tuple[float, float, int]:
    fn(z, c)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(z, c)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return statistics.median(times), min(times), torch.cuda.max_memory_allocated() - base
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(z, c)
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cpu-grid", action="store_true",
                        help="N = 16384 against K = 16384 at D = 8, 32, 64, 128, 256 (and K = 4096 at D = 32)")
    parser.add_argument("--gpu-grid", action="store_true",
                        help="N in {65536, 262144}, K in {4096, 16384}, D in {8, 32, 256}; fp32 and bf16")
    parser.add_argument("--shapes", default=None, help="comma-separated NxKxD, e.g. 16384x16384x8 (fp32)")
    parser.add_argument("--paths", default=None, help="comma-separated subset of the paths to time")
    parser.add_argument("--check", action="store_true", help="count rows that differ from the float64 reference")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (and faiss); default: torch's own choice")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        try:
            import faiss

            faiss.omp_set_num_threads(args.threads)
        except ImportError:
            pass
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.shapes:
        grid = [tuple(int(v) for v in shape.split("x")) for shape in args.shapes.split(",")]
        dtypes = [torch.float32]
    elif args.cpu_grid:
        grid = [(16384, 16384, 8), (16384, 4096, 32), (16384, 16384, 32), (16384, 16384, 64), (16384, 16384, 128),
                (16384, 16384, 256)]
        dtypes = [torch.float32]
    elif args.gpu_grid:
        grid = [(n, k, d) for n in (65536, 262144) for k in (4096, 16384) for d in (8, 32, 256)]
        dtypes = [torch.float32, torch.bfloat16]
    elif args.quick:
        grid = [(16384, 1024, 8), (16384, 16384, 8), (16384, 4096, 32), (4096, 4096, 256)]
        dtypes = [torch.float32]
    else:
        grid = [(n, k, d) for n in (16384, 65536, 262144) for k in (1024, 16384, 65536) for d in (8, 32, 256)]
        dtypes = [torch.float32, torch.bfloat16, torch.float16] if device == "cuda" else [torch.float32]
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    rows = []
    for dtype in dtypes:
        for n, k, d in grid:
            z = torch.randn(n, d, device=device).to(dtype)
            c = torch.randn(k, d, device=device).to(dtype)
            row = {"dtype": str(dtype).replace("torch.", ""), "N": n, "K": k, "D": d}
            chosen = paths(device)
            if args.paths:
                chosen = {p: fn for p, fn in chosen.items() if p in args.paths.split(",")}
            if dtype != torch.bfloat16:
                chosen.pop("chunked_bf16", None)
            ref = reference_index(z[:CHECK_ROWS], c) if args.check else None
            for name, fn in chosen.items():
                try:
                    seconds, best, mem = time_it(fn, z, c, args.repeats, device)
                    if ref is not None:
                        got = torch.as_tensor(fn(z, c)).reshape(-1)[:CHECK_ROWS].cpu().long()
                        row[f"{name}_rows_off"] = int((got != ref).sum())
                except (RuntimeError, MemoryError) as err:  # e.g. the unfused N x K matrix does not fit
                    seconds, best, mem = float("nan"), float("nan"), -1
                    row[f"{name}_error"] = str(err).splitlines()[0][:40]
                row[f"{name}_ms"] = seconds * 1e3
                row[f"{name}_min_ms"] = best * 1e3
                if mem >= 0:
                    row[f"{name}_MiB"] = mem / 2**20
            unfused = [row[f"{p}_ms"] for p in ("cdist", "expanded") if f"{p}_ms" in row and row[f"{p}_ms"] == row[f"{p}_ms"]]
            ours = row.get("dispatch_ms", row.get("fused_ms", row.get("chunked_ms")))  # what `nearest_codeword` takes
            if unfused and ours:
                row["speedup_vs_best_unfused"] = min(unfused) / ours
            if "fused_cpu_min_ms" in row:
                for other in ("faiss", "chunked"):
                    if f"{other}_min_ms" in row:
                        row[f"fused_cpu_speedup_vs_{other}"] = row[f"{other}_min_ms"] / row["fused_cpu_min_ms"]
            if gpu and "fused_ms" in row:
                seconds = row["fused_ms"] / 1e3
                peak = next((v for key, v in PEAK_TFLOPS.items() if key in gpu), {}).get(dtype)
                if peak:  # the dense math: 2 N K D FLOPs
                    row["fused_%peak_flops"] = 100 * 2 * n * k * d / seconds / (peak * 1e12)
                bandwidth = next((v for key, v in PEAK_TBPS.items() if key in gpu), None)
                if bandwidth:  # the unavoidable traffic: z and the codebook in, index + distance out
                    moved = (n + k) * d * z.element_size() + n * (8 + 4)
                    row["fused_%peak_bw"] = 100 * moved / seconds / (bandwidth * 1e12)
                unfused_mem = [row[f"{p}_MiB"] for p in ("cdist", "expanded") if row.get(f"{p}_MiB", 0) > 0]
                if unfused_mem and "fused_MiB" in row:
                    row["fused_mem_%_of_unfused"] = 100 * row["fused_MiB"] / min(unfused_mem)
            rows.append(row)
            del z, c
    print(f"device: {gpu or 'cpu'} ({torch.get_num_threads()} threads), torch {torch.__version__}")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
