"""``tokbench list``: every registered tokenizer with its family, size and token budget at 256 px,
and for a public name the released file it expects.

Describing a tokenizer means building it (on the meta device), which imports torch and every
family: seconds. The rows are therefore cached in ``$TOKBENCH_CACHE/list`` (else
``~/.cache/tokbench/list``) under a key made of the registered entry points, their
distributions' versions and the size and modification time of every source file of tokbench
and of each plug-in's package, so any code change rebuilds them and an unchanged install lists
in milliseconds without importing torch.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
from importlib.metadata import entry_points
from pathlib import Path

ENTRY_POINT_GROUP = "tokbench.tokenizers"  # = tokbench.registry.ENTRY_POINT_GROUP (not imported: it imports yaml)
COLUMNS = ("name", "spec", "family", "kind", "params", "tokens@256", "vocab/channels", "bits@256", "released file")


def describe_variants(name: str) -> list[dict]:
    """One row per named variant (or the default) of a registered tokenizer, built on the meta device."""
    import torch

    from tokbench import registry

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


def describe_all(names: list[str]) -> list[dict]:
    """Rows for every name; a broken plug-in gives an error row instead of hiding the others."""
    rows = []
    for name in names:
        try:
            rows.extend(describe_variants(name))
        except Exception as err:  # a broken plug-in must not hide the others
            rows.append({"name": name, "variant": "-", "spec": name, "kind": f"error: {err}"})
    return rows


def source_signature(modules: list[str]) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of every ``.py`` file of tokbench and of the packages holding ``modules``.

    Found with ``importlib.util.find_spec``, which imports the parent packages only (light here).
    """
    roots = {Path(__file__).resolve().parents[1]}  # the tokbench package
    for module in modules:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin and spec.origin not in ("built-in", "frozen"):
            roots.add(Path(spec.origin).resolve().parent)
    files = {f for root in roots for f in root.rglob("*.py")}
    return [(str(f), st.st_size, st.st_mtime_ns) for f in sorted(files) if (st := f.stat())]


def cache_key() -> str:
    """What the listed rows depend on: the entry points, their distributions, their source files."""
    eps = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    declared = [(ep.name, ep.value, ep.dist.name if ep.dist else "", ep.dist.version if ep.dist else "") for ep in eps]
    modules = sorted({ep.module for ep in eps})
    blob = json.dumps([declared, source_signature(modules)])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_dir() -> Path:
    root = os.environ.get("TOKBENCH_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"),
                                                            "tokbench")
    return Path(root) / "list"


def registered_rows() -> tuple[list[dict], bool]:
    """The rows of every entry-point tokenizer, from the cache when it is current; (rows, from_cache)."""
    names = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
    path = cache_dir() / f"{cache_key()}.json"
    try:
        cached = json.loads(path.read_text())
        if sorted({r["name"] for r in cached}) == names:
            return cached, True
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or unreadable: rebuild
    rows = describe_all(names)
    if not any(str(r.get("kind", "")).startswith("error:") for r in rows):  # never cache a transient failure
        from tokbench.atomic import atomic_write_text

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(rows))
        except OSError:
            pass  # a read-only cache folder only costs the next run its speed
    return rows, False


def format_table(rows: list[dict]) -> str:
    """A left-aligned text table of ``COLUMNS`` (params as 12.3M)."""
    cells = [[str(r.get(c, "")) if c != "params" or "params" not in r else format_params(int(r["params"]))
              for c in COLUMNS] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    rows, _ = registered_rows()
    print(format_table(rows))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("list", help="list registered tokenizers (params, tokens per image at 256 px)")
    p.set_defaults(func=run)
