"""``tokbench gen sample --generator DIR --num 50000 --cfg 1.75 --out SAMPLES`` (see `tokbench.generation.sample`)."""
from __future__ import annotations

import argparse


def _interval(text: str) -> tuple[float, float]:
    try:
        start, end = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START,END fractions such as 0,1 or 0.2,1 -- got {text!r}") from None
    if not 0 <= start < end <= 1:
        raise argparse.ArgumentTypeError(f"expected 0 <= START < END <= 1, got {text!r}")
    return start, end


def run_sample(args: argparse.Namespace) -> int:
    from tokbench.distributed import init_from_environment, rank_and_world
    from tokbench.generation.sample import SamplingSettings, sample_to_folder

    device = init_from_environment(args.device)
    rank, world = rank_and_world()
    settings = SamplingSettings(cfg=args.cfg, cfg_interval=args.cfg_interval, cfg_schedule=args.cfg_schedule,
                                temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                diffusion_steps=args.diffusion_steps, seed=args.seed)
    out = sample_to_folder(args.generator, args.out, args.num, settings, classes=args.classes,
                           batch_size=args.batch_size, device=device, tokenizer=args.tokenizer,
                           npz=args.format == "npz", rank=rank, world_size=world, compile=args.compile)
    if rank == 0:
        print(f"wrote {args.num} samples to {out} (manifest.json{', samples.npz' if args.format == 'npz' else ''})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sample", help="draw images from a trained generator (PNGs, or ADM's .npz)")
    p.add_argument("--generator", required=True, help="a generator checkpoint (<run>/generator from gen fit)")
    p.add_argument("--out", required=True, help="sample folder (resumable: existing PNGs are kept)")
    p.add_argument("--num", type=int, default=50_000, help="number of samples (default 50,000, as for gFID)")
    p.add_argument("--classes", default="all", help="'all' (balanced) or class indices/names, comma-separated")
    p.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale (1 = none; LlamaGen uses 1.75-2)")
    p.add_argument("--cfg-interval", type=_interval, default=(0.0, 1.0),
                   help="next-token generators: guide only on this fraction of the steps, START,END (default 0,1)")
    p.add_argument("--cfg-schedule", choices=("linear", "constant"), default="linear",
                   help="next-scale generators: VAR's ramp from 1 at the first map to --cfg at the last; mar "
                        "generators: MAR's ramp 1 + (cfg - 1) * generated / tokens; or constant")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--diffusion-steps", type=int, default=100,
                   help="continuous (mar) generators: reverse-diffusion steps per token (MAR: 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--format", choices=("png", "npz"), default="png", help="npz: also pack ADM's samples.npz")
    p.add_argument("--tokenizer", help="decode with this tokenizer instead of the recorded one (same weights only)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true",
                   help="compile the decode step (torch.compile; CUDA graphs on a GPU): slower start, faster long runs")
    p.set_defaults(func=run_sample)
