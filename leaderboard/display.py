"""How an entry is named and badged on the pages: short names, what was checked, grouped reasons.

A submitted tokenizer name is the spec the submitter ran (``llamagen-vq16:weights=../fixtures/vq_ds16_c2i.pt``);
its local paths mean nothing to a reader and leak the submitter's file layout, so tables show the
name without them plus a short weights hash; the entry page shows the full spec.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tokbench.comparability import recognizer

# Option values that are files on the submitter's machine (a weights file, a checkpoint folder).
WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".npz", ".pkl", ".h5", ".onnx")
PATH_CHARS = re.compile(r"^[\w.~/\\+@: -]+$")
SHORT_HASH = 8
MAX_NAME = 48


@dataclass(frozen=True)
class Check:
    """One thing the leaderboard checked (or could not) about an entry, for its badge."""

    key: str  # "datasets" | "weights" | "reproduced"
    ok: bool
    label: str  # the badge text
    detail: str  # the sentence behind it (tooltip, entry page)


def _is_path(value: str) -> bool:
    """A file or folder name as a shell would take it: path characters only, with a separator
    or a weights file's suffix."""
    value = value.strip().strip("'\"")
    if not PATH_CHARS.match(value):
        return False
    return "/" in value or "\\" in value or value.startswith("~") or value.lower().endswith(WEIGHT_SUFFIXES)


def _last_parts(path: str) -> str:
    parts = [p for p in re.split(r"[\\/]+", path.strip()) if p not in ("", ".", "..")]
    if not parts:
        return path
    # The folder says what a file or an "export" folder is: "vq-tiny/last.ckpt", "vq-tiny/export".
    return "/".join(parts[-2:])


def display_name(spec: str) -> str:
    """``spec`` without local paths: ``llamagen-vq16:weights=../x/vq.pt`` -> ``llamagen-vq16``,
    ``jpeg:q=50`` unchanged, a checkpoint path ``runs/vq-tiny/last.ckpt`` -> ``vq-tiny/last.ckpt``;
    at most :data:`MAX_NAME` characters."""
    name, colon, rest = spec.partition(":")
    if _is_path(name) and not colon:
        shown = _last_parts(name)
    else:
        # Options are split on every comma: a bracketed list value is rejoined unchanged, and
        # only key=value items whose value is a path are dropped.
        kept = [item for item in rest.split(",") if not ("=" in item and _is_path(item.partition("=")[2]))]
        options = ",".join(kept).strip(",")
        shown = (_last_parts(name) if _is_path(name) else name) + (f":{options}" if options else "")
    shown = shown.strip() or spec[:MAX_NAME]
    return shown if len(shown) <= MAX_NAME else shown[:MAX_NAME - 1] + "…"


def short_hash(sha256: str | None) -> str | None:
    """The first characters of a weights SHA-256, enough to tell checkpoints apart at a glance."""
    return sha256[:SHORT_HASH] if sha256 else None


def checks(status: str, reasons: list[dict[str, str]], checkpoint_sha256: str | None) -> list[Check]:
    """What a badge can honestly say: the datasets matched the server's suites (or why not),
    the weights file is identified by its hash (or not), and whether anyone re-ran the entry."""
    datasets_ok = status == "verified"
    datasets = Check("datasets", datasets_ok, "datasets ✓" if datasets_ok else "datasets ✗",
                     "every dataset's fingerprint matches the server's suite" if datasets_ok else
                     "; ".join(f"{', '.join(names)}: {why}" for names, why in grouped_reasons(reasons))
                     or "the datasets are not the server's suites")
    weights_ok = checkpoint_sha256 is not None
    weights = Check("weights", weights_ok, "weights hash ✓" if weights_ok else "no weights hash",
                    f"weights file SHA-256 {checkpoint_sha256}" if weights_ok else
                    "no checkpoint file recorded (a codec baseline, or a tokenizer built without weights)")
    reproduced = Check("reproduced", False, "not reproduced",
                       "the scores are the submitter's: the leaderboard does not re-run tokenizers")
    return [datasets, weights, reproduced]


def grouped_reasons(reasons: dict[str, str] | list[dict[str, str]]) -> list[tuple[list[str], str]]:
    """Reasons stated once each: ``{name: reason}`` (or a list of ``{"field", "reason"}``) as
    ``[(names, reason)]``, one item per distinct reason, in first-seen order."""
    pairs = reasons.items() if isinstance(reasons, dict) else [(r["field"], r["reason"]) for r in reasons]
    by_reason: dict[str, list[str]] = {}
    for name, reason in pairs:
        by_reason.setdefault(reason, []).append(name)
    return [(names, reason) for reason, names in by_reason.items()]


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """``1 entry``, ``3 entries``, ``0 images``."""
    if count == 1:
        return f"{count:,} {noun}"
    return f"{count:,} {plural_noun or (noun[:-1] + 'ies' if noun.endswith('y') else noun + 's')}"


def recognizers(results: dict[str, Any]) -> dict[str, str]:
    """Task -> the OCR engine it recorded (``extra.protocol.ocr``), for tasks that record one."""
    return {task: r for task, block in results.get("tasks", {}).items() if (r := recognizer(block))}
