"""Start-up time of the light ``tokbench`` commands, and whether they import torch.

Each command runs as a fresh process (``PYTHON -m tokbench ...``), ``--repeats`` times; the
table gives the median wall time and, from one ``python -X importtime`` run, whether torch,
Lightning or pandas were imported. Give several interpreters to compare installs side by side
(e.g. a venv with main's checkout and one with a branch's):

    python benchmarks/cli_startup.py --python before=/work/main/.venv/bin/python \\
        --python after=.venv/bin/python --results runs/eval/results.json

``list`` is timed warm (its row cache filled by a first, untimed run). Commands that fail
(``submit`` without a server or token) still count: their start-up is what is measured.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

HEAVY = ("torch", "lightning", "pandas")


def commands(results: str) -> list[list[str]]:
    return [["--help"], ["list"], ["validate", results], ["submit", results, "--server", "http://127.0.0.1:9",
                                                           "--token", "x"],
            ["leaderboard", "--help"], ["leaderboard", "show", "--db", "sqlite:///{tmp}/none.db"],
            ["compare", "--help"], ["eval", "--help"], ["train", "--help"]]


def wall_time(python: str, argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([python, "-m", "tokbench", *argv], capture_output=True, timeout=600)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def heavy_imports(python: str, argv: list[str]) -> list[str]:
    out = subprocess.run([python, "-X", "importtime", "-m", "tokbench", *argv], capture_output=True, text=True,
                         timeout=600)
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    return [m for m in HEAVY if m in imported]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append", required=True, metavar="LABEL=PYTHON",
                        help="an interpreter with tokbench installed, under a label (repeatable)")
    parser.add_argument("--results", required=True, help="a results.json for validate/submit")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pythons = [tuple(p.split("=", 1)) for p in args.python]
    header = ["command"] + [f"{label}: median wall (heavy imports)" for label, _ in pythons]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for argv in commands(args.results):
            argv = [a.replace("{tmp}", tmp) for a in argv]
            cells = []
            for _, python in pythons:
                if argv == ["list"]:
                    subprocess.run([python, "-m", "tokbench", "list"], capture_output=True, timeout=600)  # warm
                heavy = heavy_imports(python, argv)
                cells.append(f"{wall_time(python, argv, args.repeats):.2f} s ({', '.join(heavy) or 'none'})")
            shown = " ".join(a if len(a) < 30 else "…" + a[-20:] for a in argv)
            print(f"| `tokbench {shown}` | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
