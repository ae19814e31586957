"""Encode/decode throughput of release-size public tokenizers on one device (random weights).

    python benchmarks/tokenizer_throughput.py --device cuda          # batch 32, 256 px, fp32 and bf16
    python benchmarks/tokenizer_throughput.py --names vq --batch 2   # a CPU smoke run

Each tokenizer is built at its release configuration with random weights (speed does not
depend on them), then encodes and decodes a random batch ``--repeats`` times after one
warm-up, in fp32 and under bf16 autocast. Columns: images/s for each, and for discrete
tokenizers the share of ids that bf16 leaves unchanged (why evaluation stays in fp32).
One Markdown table on stdout.
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from tokbench import registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from markdown_table import print_table  # noqa: E402

RELEASE = "llamagen-vq16,var-vqvae,titok-s128,sd-vae-kl-f8"


def timed(fn, repeats: int, device: torch.device):
    out = fn()  # warm-up (and the result)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, (time.perf_counter() - start) / repeats


def measure(name: str, device: torch.device, batch: int, size: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = registry.create(name).eval().to(device)
    x = torch.rand(batch, 3, size, size, device=device)
    row, ids = {"tokenizer": name}, {}
    for mode in ("fp32", "bf16"):
        context = torch.autocast(device.type, dtype=torch.bfloat16) if mode == "bf16" else nullcontext()
        with torch.no_grad(), context:
            tokens, enc_s = timed(lambda: model.encode(x), repeats, device)
            _, dec_s = timed(lambda: model.decode(tokens), repeats, device)
        row[f"encode_img_s_{mode}"] = batch / enc_s
        row[f"decode_img_s_{mode}"] = batch / dec_s
        ids[mode] = getattr(tokens, "ids", None)
    if ids["fp32"] is not None and ids["bf16"] is not None:
        row["ids_unchanged_by_bf16"] = float((ids["fp32"] == ids["bf16"]).float().mean())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", default=RELEASE, help="comma-separated registry names")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for name in args.names.split(","):
        rows.append(measure(name, device, args.batch, args.image_size, args.repeats))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"batch {args.batch}, {args.image_size} px, random weights, {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f", {torch.get_num_threads()} threads")
          + f", torch {torch.__version__}\n")
    print_table(rows)


if __name__ == "__main__":
    main()
