"""``tokbench list``: every registered tokenizer with its family, size and token budget at 256 px,
and for a public name the released file it expects."""
from __future__ import annotations

import argparse

import pandas as pd
import torch

from tokbench import registry


def describe_variants(name: str) -> list[dict]:
    """One row per named variant (or the default) of a registered tokenizer, built on the meta device."""
    rows = []
    release = getattr(registry.get_factory(name), "release", None)
    for variant, options in (registry.variants(name) or {"default": {}}).items():
        with torch.device("meta"):
            tokenizer = registry.get_factory(name)(**options)
        layout = tokenizer.layout_for(256, 256)
        fixed = layout.arrangement != "bytes" or layout.num_tokens > 0
        rows.append({
            "name": name,
            "variant": variant,
            "spec": name + (":" + ",".join(f"{k}={v}" for k, v in options.items()) if options else ""),
            "family": tokenizer.family,
            "kind": tokenizer.kind,
            "params": tokenizer.num_parameters(),
            "tokens@256": layout.num_tokens if fixed else "variable",
            "vocab/channels": str(layout.vocab_size) if layout.vocab_size is not None else f"{layout.latent_channels} ch",
            "bits@256": bits_at_256(layout, fixed),
            "released file": release.files if release else "",
        })
    return rows


def bits_at_256(layout, fixed: bool) -> int | str:
    if layout.bits_per_image is not None:
        return round(layout.bits_per_image)
    if layout.kind == "continuous":
        return "-"  # continuous latents have no bit count
    return 8 * layout.num_tokens if fixed else "variable"


def format_params(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e5 else str(n)


def run(args: argparse.Namespace) -> int:
    rows = []
    for name in registry.names():
        try:
            rows.extend(describe_variants(name))
        except Exception as err:  # a broken plug-in must not hide the others
            rows.append({"name": name, "variant": "-", "spec": name, "kind": f"error: {err}"})
    table = pd.DataFrame(rows)
    if "params" in table:
        table["params"] = table["params"].map(lambda n: format_params(int(n)) if pd.notna(n) else "")
    print(table.drop(columns=["variant"]).fillna("").to_string(index=False))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("list", help="list registered tokenizers (params, tokens per image at 256 px)")
    p.set_defaults(func=run)
