"""The results file (``results.json``): schema, validation, atomic writing.

The JSON Schema (``tokbench/schemas/results.schema.json``) fixes the structure; on top of
it, known metrics must lie in their valid ranges. Every error names the JSON path.
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from tokbench.checkpoint import atomic_write_text

RESULTS_SCHEMA_VERSION = 1

# Valid range of each known metric (mean and interval bounds), and its direction.
METRIC_RANGES: dict[str, tuple[float, float, bool]] = {
    "psnr": (0.0, 100.0, True), "ssim": (-1.0, 1.0, True), "lpips": (0.0, 2.0, False), "rfid": (0.0, math.inf, False),
    "energy_kept": (0.0, 1.0, True), "resolved_frequency": (0.0, 0.5, True), "edge_f1": (0.0, 1.0, True),
    "cer_gt": (0.0, math.inf, False), "wer_gt": (0.0, math.inf, False),
    "cer_ocr": (0.0, math.inf, False), "wer_ocr": (0.0, math.inf, False),
    **{f"word_{m}_{b}": (0.0, 1.0, True) for m in ("acc", "ned") for b in ("small", "medium", "large", "all")},
    "nll_bits_per_image": (0.0, math.inf, False), "gfid": (0.0, math.inf, False),
}


@lru_cache(maxsize=1)
def load_schema() -> dict:
    return json.loads(resources.files("tokbench.schemas").joinpath("results.schema.json").read_text())


def _path(parts) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def validate_results(obj: Any) -> list[str]:
    """Every problem with a results object, each as ``"<json path>: <reason>"``; empty when valid."""
    errors = [f"{_path(e.absolute_path)}: {e.message}" for e in
              sorted(jsonschema.Draft202012Validator(load_schema()).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]
    if errors:
        return errors
    for task, block in obj["tasks"].items():
        for name, metric in block["metrics"].items():
            where = f"$.tasks.{task}.metrics.{name}"
            values = [metric["mean"], *metric["ci95"]]
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                errors.append(f"{where}: values must be finite numbers")
                continue
            if name in METRIC_RANGES:
                lo, hi, _ = METRIC_RANGES[name]
                if not all(lo <= v <= hi for v in values):
                    errors.append(f"{where}: {name} must lie in [{lo}, {hi}], got mean {metric['mean']} ci95 {metric['ci95']}")
            if not metric["ci95"][0] <= metric["mean"] <= metric["ci95"][1]:
                errors.append(f"{where}: mean {metric['mean']} is outside its interval {metric['ci95']}")
    return errors


def write_results(path: str | Path, obj: dict) -> None:
    """Validate, then write atomically (a reader never sees half a file)."""
    errors = validate_results(obj)
    if errors:
        raise ValueError("results do not match the schema: " + "; ".join(errors[:5]))
    atomic_write_text(Path(path), json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_results(path: str | Path) -> dict:
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read a results file ({err})") from err
    errors = validate_results(obj)
    if errors:
        raise ValueError(f"{path}: invalid results file: " + "; ".join(errors[:5]))
    return obj
