"""Key maps: how an upstream state dict's names and tensors become a tokbench module's.

A `KeyMap` is a list of entries, each building one tokbench tensor from one or more
upstream tensors (a rename, or q/k/v concatenated into one ``qkv``). Applying it to an
upstream state dict reports, in the upstream's own names, every key that is missing or
that no entry uses -- never silently ignoring a mismatch as upstream ``strict=False``
loaders do.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from tokbench.checkpoint import CheckpointError


def as_conv1x1(t: torch.Tensor) -> torch.Tensor:
    """A Linear weight ``(out, in)`` as a 1x1 conv weight ``(out, in, 1, 1)``; conv weights pass through."""
    return t[:, :, None, None] if t.dim() == 2 else t


def concat_rows(*ts: torch.Tensor) -> torch.Tensor:
    return torch.cat(ts, dim=0)


@dataclass
class Entry:
    """``dst`` (tokbench name) = ``combine(*[state[s] for s in srcs])``."""

    dst: str
    srcs: tuple[str, ...]
    combine: Callable[..., torch.Tensor] | None = None

    def build(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        tensors = [state[s] for s in self.srcs]
        return self.combine(*tensors) if self.combine else tensors[0]


@dataclass
class KeyMap:
    entries: list[Entry] = field(default_factory=list)

    def rename(self, dst: str, src: str, combine: Callable[..., torch.Tensor] | None = None) -> None:
        self.entries.append(Entry(dst, (src,), combine))

    def params(self, dst: str, src: str, names: tuple[str, ...] = ("weight", "bias"),
               combine: Callable[..., torch.Tensor] | None = None) -> None:
        """``dst.weight <- src.weight`` and ``dst.bias <- src.bias``."""
        for n in names:
            self.rename(f"{dst}.{n}", f"{src}.{n}", combine)

    def concat(self, dst: str, srcs: list[str], combine: Callable[..., torch.Tensor]) -> None:
        self.entries.append(Entry(dst, tuple(srcs), combine))

    def upstream_keys(self) -> set[str]:
        return {s for e in self.entries for s in e.srcs}

    def to_upstream(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A tokbench state dict written back in the upstream's names, for upstreams whose
        fused tensors are row concatenations of same-shaped convs (``ldm``, ``var``,
        ``llamagen`` naming; TiTok): used to write released-format files in tests and benchmarks."""
        out: dict[str, torch.Tensor] = {}
        for entry in self.entries:
            tensor = state[entry.dst]
            parts = tensor.chunk(len(entry.srcs)) if len(entry.srcs) > 1 else [tensor]
            out.update({src: part.clone() for src, part in zip(entry.srcs, parts)})
        return out

    def apply(self, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
        """The tokbench state dict; a `CheckpointError` listing missing and unexpected upstream keys."""
        expected = self.upstream_keys()
        check_keys(set(state), expected, source)
        return {e.dst: e.build(state) for e in self.entries}


def _short(keys: list[str], limit: int = 6) -> str:
    more = f" ... ({len(keys)} in all)" if len(keys) > limit else ""
    return "[" + ", ".join(keys[:limit]) + more + "]"


def check_keys(present: set[str], expected: set[str], source: str) -> None:
    """One-line `CheckpointError` when the key sets differ."""
    missing, unexpected = sorted(expected - present), sorted(present - expected)
    problems = []
    if missing:
        problems.append(f"missing keys {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_short(unexpected)}")
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))


def load_converted(module: torch.nn.Module, converted: dict[str, torch.Tensor], source: str,
                   own_buffers: tuple[str, ...] = ()) -> None:
    """Load converted weights strictly; tokbench-only bookkeeping buffers whose names end in
    one of ``own_buffers`` keep the module's own values. Shape mismatches name the key."""
    from tokbench.checkpoint import load_weights_strict

    own = module.state_dict()
    full = dict(converted)
    for key, value in own.items():
        if key not in full and key.endswith(own_buffers):
            full[key] = value
    load_weights_strict(module, full, source)
