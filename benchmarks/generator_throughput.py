"""Generator throughput: a training step's time, model FLOPs and MFU, and sampling speed.

    python benchmarks/generator_throughput.py                                   # tiny GPT, CPU
    python benchmarks/generator_throughput.py --device cuda --preset B --vocab 16384 --grid 16 \\
        --batch 64 --sample-batch 64 --cfg 2 --bf16 --compile                  # GPT-B as LlamaGen

A class-conditional next-token GPT (`TokenGPT`, random weights: speed does not depend on
them) on a ``grid x grid`` token map. Training: ``--warmup`` untimed steps (the last one
counts the model FLOPs, `benchmarks/mfu.py`), then ``--steps`` timed ones of forward,
backward and AdamW (fused on CUDA), under bf16 autocast with ``--bf16``. Sampling (static KV
cache, CFG ``--cfg``): the first batch of a new batch size (what a user waits for, compile
or attention plans included) and the median of ``--sample-repeats`` warm batches; with
``--compile`` the same model is measured again with its decode step compiled (CUDA graphs on
CUDA) and its training forward compiled. One Markdown table on stdout.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from tokbench.generation.compile import compile_sampling, compile_training
from tokbench.generation.gpt import TokenGPT
from tokbench.generation.presets import PRESETS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from markdown_table import print_table  # noqa: E402
from mfu import counted_flops, peak_flops, throughput_columns  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def train_row(model: TokenGPT, args, device: torch.device, label: str) -> dict:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    g = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, args.vocab, (args.batch, model.seq_len), generator=g).to(device)
    labels = torch.randint(0, 1000, (args.batch,), generator=g).to(device)

    def step():
        with autocast(device, args.bf16):
            loss = model.loss(ids, labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    model.train()
    for _ in range(max(0, args.warmup - 1)):
        step()
    with counted_flops() as flops:
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / args.steps
    row = {"row": f"train {label}", "batch": args.batch, "ms": 1e3 * seconds,
           "tokens_per_s": args.batch * model.seq_len / seconds}
    row.update(throughput_columns(flops(), seconds, peak_flops(device, "bf16" if args.bf16 else "fp32",
                                                              args.peak_tflops)))
    return row


def sample_rows(model: TokenGPT, args, device: torch.device, label: str) -> list[dict]:
    model.eval()
    labels = torch.arange(args.sample_batch, device=device) % 1000

    def batch(seed: int) -> float:
        sync(device)
        start = time.perf_counter()
        with autocast(device, args.bf16):
            model.generate(labels, cfg=args.cfg, generator=torch.Generator(device=device).manual_seed(seed))
        sync(device)
        return time.perf_counter() - start

    first = batch(0)
    warm = statistics.median(batch(1 + i) for i in range(args.sample_repeats))
    return [{"row": f"sample {label}", "batch": args.sample_batch, "first_batch_s": first, "warm_batch_s": warm,
             "first_over_warm": first / warm, "images_per_s": args.sample_batch / warm}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="tiny", choices=list(PRESETS))
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--grid", type=int, default=8, help="token map side (sequence length grid^2)")
    parser.add_argument("--batch", type=int, default=8, help="training batch")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sample-batch", type=int, default=8)
    parser.add_argument("--sample-repeats", type=int, default=2)
    parser.add_argument("--cfg", type=float, default=2.0)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (training and sampling)")
    parser.add_argument("--compile", action="store_true", help="also measure with torch.compile")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default: mfu.py's table)")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = TokenGPT(args.vocab, args.grid**2, num_classes=1000, grid=(args.grid, args.grid),
                     **PRESETS[args.preset]).to(device)
    rows = []
    if not args.skip_train:
        rows.append(train_row(model, args, device, "eager"))
    rows += sample_rows(model, args, device, "eager")
    if args.compile:
        compile_sampling(model, device)
        rows += sample_rows(model, args, device, "compiled")
        if not args.skip_train:
            compile_training(model)
            rows.append(train_row(model, args, device, "compiled"))
    print(f"GPT {args.preset} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters), "
          f"{args.grid}x{args.grid} tokens, vocabulary {args.vocab}, CFG {args.cfg}, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}, {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f", {torch.get_num_threads()} threads")
          + f", torch {torch.__version__}\n")
    print_table(rows)


if __name__ == "__main__":
    main()
