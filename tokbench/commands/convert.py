"""``tokbench convert NAME --weights PATH OUT_DIR``: a public tokenizer's released file -> a
tokbench checkpoint (``config.json`` + ``model.safetensors``) that loads with no adapter."""
from __future__ import annotations

import argparse



def run(args: argparse.Namespace) -> int:
    import tokbench
    from tokbench.registry import with_weights

    tokenizer = tokbench.load(with_weights(args.name, args.weights))
    tokenizer.save_pretrained(args.out_dir)
    print(f"wrote {args.out_dir}: family {tokenizer.family}, {tokenizer.num_parameters():,} parameters "
          f"(from {args.weights or args.name})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("convert", help="write a public tokenizer's released weights as a tokbench checkpoint")
    p.add_argument("name", help="public tokenizer name (llamagen-vq16, var-vqvae, ...) or a released file")
    p.add_argument("out_dir", help="output checkpoint directory")
    p.add_argument("--weights", help="the released file or folder")
    p.set_defaults(func=run)
