"""Core sub-commands: ``list``, ``info``, ``reconstruct``, ``convert``."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the core sub-commands to the ``tokbench`` parser."""
    from tokbench.commands import convert, info, list_tokenizers, reconstruct

    for module in (list_tokenizers, info, reconstruct, convert):
        module.register(subparsers)
