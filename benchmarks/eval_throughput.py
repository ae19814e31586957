"""Throughput of `tokbench eval`: images per second per task, and where the time goes.

For each tokenizer and task this runs the real benchmark (`run_eval`, built-in suites,
LPIPS/rFID skipped as on an offline machine) in a fresh output folder and a fresh OCR
cache, so nothing is resumed or cached, and prints a Markdown table:

    images/s   wall-clock images per second for the task (after start-up)
    tokenizer  share of the task's time in encode + decode (batched, --device)
    metrics    PSNR/SSIM/detail measures/edit distances in the main process
    ocr        OCR (text task): waiting for the Tesseract worker processes, or EasyOCR in the
               main process on --device (``--ocr tesseract,easyocr`` measures both)
    io         waiting for decoded images from the loader workers, writing reconstructions

Usage: python benchmarks/eval_throughput.py [--limit 17] [--tokenizers jpeg:q=50,vq:size=tiny]
       [--tasks reconstruction,detail,text] [--device cpu] [--batch-size 8] [--workers N]
       [--ocr tesseract,easyocr] [--text-protocol own|tokbench] [--suite text-sizes]
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch


def measure(tokenizer: str, task: str, args: argparse.Namespace, ocr: str = "tesseract") -> dict:
    from tokbench.tasks.runner import EvalConfig, run_eval

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TOKBENCH_CACHE"] = str(Path(tmp) / "cache")  # no OCR of originals carried over
        cfg = EvalConfig(tokenizer=tokenizer, tasks=[task], out=Path(tmp) / "out", skip_metrics=["lpips", "rfid"],
                         limit=args.limit, batch_size=args.batch_size, device=args.device, suite=args.suite,
                         task_options={"text": {"ocr": ocr, "text_protocol": args.text_protocol}},
                         workers=args.workers if args.workers is not None else min(4, os.cpu_count() or 1))
        t0 = time.perf_counter()
        results = run_eval(cfg)
        wall = time.perf_counter() - t0
    n = results["tasks"][task]["num_images"]
    task_s = results["timings"]["tasks_s"][task]
    parts = results["timings"]["breakdown_s"]
    total = sum(parts.values()) or 1.0
    return {"tokenizer": tokenizer, "task": task, "ocr": ocr if task == "text" else "-", "images": n, "task_s": task_s, "run_s": wall,
            "images_per_s": n / task_s, **{"share_" + k[:-2]: v / total for k, v in parts.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizers", default="jpeg:q=50,vq:size=tiny")
    parser.add_argument("--tasks", default="reconstruction,detail,text")
    parser.add_argument("--limit", type=int, default=None, help="images per task (default: the whole suite)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--ocr", default="tesseract", help="text task's recognizers, comma-separated: tesseract,easyocr")
    parser.add_argument("--text-protocol", default="own", choices=["own", "tokbench"])
    parser.add_argument("--suite", default=None, help="built-in suite for every task (default: each task's own)")
    args = parser.parse_args()
    print(f"# tokbench eval throughput: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"device {args.device}, torch {torch.__version__}, batch {args.batch_size}\n")
    print("| tokenizer | task | recognizer | images | images/s | task s | tokenizer | metrics | ocr | io |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for tokenizer in args.tokenizers.split(","):
        for task in args.tasks.split(","):
            for ocr in args.ocr.split(",") if task == "text" else ["tesseract"]:
                print_row(measure(tokenizer, task, args, ocr))


def print_row(r: dict) -> None:
    print(f"| {r['tokenizer']} | {r['task']} | {r['ocr']} | {r['images']} | {r['images_per_s']:.2f} | {r['task_s']:.1f} "
          f"| {r['share_tokenizer']:.0%} | {r['share_metrics']:.0%} | {r['share_ocr']:.0%} "
          f"| {r['share_io']:.0%} |", flush=True)


if __name__ == "__main__":
    main()
