"""``tokbench gen ...``: the downstream AR generator pipeline.

    tokbench gen encode  images -> a token dataset (memory-mapped tokens + labels)
    tokbench gen fit     train a generator preset on a token dataset (Lightning)
    tokbench gen sample  draw images from a trained generator
    tokbench gen score   gFID / IS / precision-recall of samples against a reference

Each sub-command lives in its own module under `tokbench.generation.commands` and exposes
``register(subparsers)``; this module only builds the ``gen`` group.
"""
from __future__ import annotations

import argparse
import importlib

# One module per sub-command, in the order `tokbench gen --help` lists them.
SUBCOMMANDS: tuple[str, ...] = ("encode", "fit", "sample", "score")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("gen", help="train, sample and score AR generators on a tokenizer's tokens")
    gen_subparsers = p.add_subparsers(dest="gen_command", metavar="GEN_COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"tokbench.generation.commands.{name}").register(gen_subparsers)
    p.set_defaults(func=lambda args: p.print_help() or 2)
