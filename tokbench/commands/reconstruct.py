"""``tokbench reconstruct CKPT IMAGE... --out DIR``: reconstructions and side-by-side PNGs."""
from __future__ import annotations

import argparse
from pathlib import Path



def run(args: argparse.Namespace) -> int:
    import torch  # imported by the command, not the CLI's start-up

    import tokbench
    from tokbench.imageio import load_image, quantize_8bit, save_png
    from tokbench.metrics_basic import psnr_8bit
    from tokbench.registry import with_weights

    tokenizer = tokbench.load(with_weights(args.checkpoint, args.weights)).to(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in map(Path, args.images):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such image file")
        x = load_image(path).unsqueeze(0).to(args.device)
        tokens = tokenizer.encode(x)
        rec = quantize_8bit(tokenizer.decode(tokens))
        save_png(rec[0], out / f"{path.stem}_rec.png")
        save_png(torch.cat([x[0], rec[0]], dim=-1), out / f"{path.stem}_side_by_side.png")
        bits = tokens.bits_per_image()
        bits_text = f"{float(bits[0]):.0f} bits" if bits is not None else "continuous"
        print(f"{path.name}: {x.shape[-1]}x{x.shape[-2]}, PSNR {float(psnr_8bit(x, rec)[0]):.2f} dB, {bits_text}")
    print(f"wrote reconstructions to {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("reconstruct", help="encode/decode images and write reconstructions")
    p.add_argument("checkpoint", help="checkpoint directory, .ckpt, or registered name")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--weights", help="released weights of a public tokenizer named as the checkpoint")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.set_defaults(func=run)
