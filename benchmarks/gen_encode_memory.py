"""Peak memory of ``tokbench gen encode`` as the dataset grows: it must not grow with N.

For each N it writes N generated photos-like images (smooth random colour fields, varied
sizes) to a temporary folder and runs ``tokbench gen encode`` on them in a fresh process
tree. Two figures per run:

* peak RSS of the largest process (``ru_maxrss`` of the finished children, measured from a
  per-run wrapper process so that runs do not share the maximum);
* peak total RSS of the whole tree (the encoder plus its DataLoader workers), sampled from
  ``/proc`` every 20 ms.

    python benchmarks/gen_encode_memory.py                     # N = 50, 200, 800
    python benchmarks/gen_encode_memory.py --sizes 50,200 --tokenizer vae:size=tiny
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

# Runs one command and prints the peak RSS of its largest process (ru_maxrss of children, KiB
# on Linux) and the peak summed RSS of its process tree, sampled from /proc.
WRAPPER = r"""
import json, os, resource, subprocess, sys, time

def tree_rss_kib(root):
    children = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(pid))
            except OSError:
                pass
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total

proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
peak_tree = 0
while proc.poll() is None:
    peak_tree = max(peak_tree, tree_rss_kib(proc.pid))
    time.sleep(0.02)
err = proc.stderr.read().decode(errors="replace")
print(json.dumps({"rc": proc.returncode, "max_process_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "peak_tree_kib": peak_tree, "stderr": err[-2000:]}))
"""


def write_images(folder: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = 96 + 16 * (i % 5), 128 - 8 * (i % 4)
        coarse = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((w, h), Image.BICUBIC).save(folder / f"{i:05d}.png")


def measure(n: int, args: argparse.Namespace, work: Path) -> dict:
    data = work / f"data{n}"
    data.mkdir()
    write_images(data, n)
    cmd = [sys.executable, "-m", "tokbench", "gen", "encode", "--tokenizer", args.tokenizer, "--data", str(data),
           "--out", str(work / f"tok{n}"), "--resolution", str(args.resolution), "--batch-size", str(args.batch_size),
           "--workers", str(args.workers)] + (["--flip"] if args.flip else [])
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise RuntimeError(f"gen encode failed on N={n}: {result['stderr']}")
    tokens = np.load(work / f"tok{n}" / "tokens.npy", mmap_mode="r")
    return {"n": n, "rows": int(tokens.shape[0]), "seconds": round(seconds, 1),
            "max_process_mib": round(result["max_process_kib"] / 1024, 1),
            "peak_tree_mib": round(result["peak_tree_kib"] / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,200,800")
    parser.add_argument("--tokenizer", default="vq:size=tiny")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--flip", action="store_true")
    args = parser.parse_args()
    print(f"tokbench gen encode --tokenizer {args.tokenizer} --resolution {args.resolution} "
          f"--batch-size {args.batch_size} --workers {args.workers}{' --flip' if args.flip else ''}; "
          f"{os.cpu_count()} CPUs")
    print("| N images | rows | wall s | peak RSS, largest process (MiB) | peak RSS, process tree (MiB) |")
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            r = measure(n, args, Path(tmp))
            print(f"| {r['n']} | {r['rows']} | {r['seconds']} | {r['max_process_mib']} | {r['peak_tree_mib']} |",
                  flush=True)


if __name__ == "__main__":
    main()
