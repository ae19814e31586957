"""The fused CPU nearest-codeword kernel's micro-kernels (AVX-512, AVX2, portable) side by side with faiss-cpu.

    python benchmarks/cpu_kernel_simd.py                       # N = K = 16,384, D = 8 and 32, one thread
    python benchmarks/cpu_kernel_simd.py --shapes 16384x16384x8 --repeats 15

Each micro-kernel this CPU runs is forced in turn (what ``TOKBENCH_CPU_SIMD`` does), next to
faiss-cpu's ``IndexFlatL2`` (``pip install faiss-cpu``, the ``bench`` extra) on the same fp32
data, all on one thread, interleaved round by round so that load from other processes falls on
all of them alike. Two clocks per call: wall time, and the calling thread's CPU time
(``time.thread_time``), which a shared machine disturbs far less; the minimum over the rounds is
the reproducible figure. Every path's indices are checked against the first path's (the kernels
must agree exactly; faiss only up to exact ties, counted).
"""
from __future__ import annotations

import argparse
import time

import pandas as pd
import torch


def faiss_search(z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    import faiss

    index = faiss.IndexFlatL2(c.shape[1])
    index.add(c.numpy())
    return torch.from_numpy(index.search(z.numpy(), 1)[1][:, 0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="16384x16384x8,16384x16384x32", help="comma-separated NxKxD")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--no-generic", action="store_true", help="skip the portable kernel (slow at large K)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from tokbench.cuda_ext import cpu_loader

    module = cpu_loader.load_extension()
    if module is None:
        raise SystemExit(f"the CPU kernel is not available: {cpu_loader.extension_status()}")
    levels = [lvl for lvl in module.simd_levels() if not (args.no_generic and lvl == "generic")]
    paths = {lvl: (lambda z, c, lvl=lvl: module.nearest_codeword_cpu(z, c, lvl)[0]) for lvl in levels}
    try:
        import faiss

        faiss.omp_set_num_threads(1)
        paths["faiss"] = faiss_search
    except ImportError:
        print("faiss-cpu not installed: kernels only")
    rows = []
    for shape in args.shapes.split(","):
        n, k, d = (int(x) for x in shape.lower().split("x"))
        gen = torch.Generator().manual_seed(0)
        z, c = torch.randn(n, d, generator=gen), torch.randn(k, d, generator=gen)
        first = None
        wall = {name: [] for name in paths}
        cpu = {name: [] for name in paths}
        for rep in range(args.repeats + 1):  # round 0 warms up
            for name, fn in paths.items():
                t_wall, t_cpu = time.perf_counter(), time.thread_time()
                idx = fn(z, c)
                if rep:
                    wall[name].append(time.perf_counter() - t_wall)
                    cpu[name].append(time.thread_time() - t_cpu)
                else:
                    first = idx if first is None else first
                    differ = int((idx != first).sum())
                    if differ and name != "faiss":
                        raise SystemExit(f"{name} differs from {levels[0]} on {differ} rows")
        row = {"N": n, "K": k, "D": d}
        for name in paths:
            row[f"{name} wall ms"] = round(min(wall[name]) * 1e3, 1)
            row[f"{name} cpu ms"] = round(min(cpu[name]) * 1e3, 1)
        if "faiss" in paths:
            for lvl in levels:
                row[f"{lvl} vs faiss (cpu)"] = round(min(cpu["faiss"]) / min(cpu[lvl]), 2)
        rows.append(row)
    print(f"torch {torch.__version__}, one thread, minimum of {args.repeats} interleaved rounds")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
