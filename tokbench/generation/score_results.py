"""``results.json`` for scored samples: a ``generation`` task block with gFID, IS, precision, recall.

The tokenizer comes from the samples' ``manifest.json`` (written by ``tokbench gen sample``);
without one it is recorded as ``unknown`` with the kind the caller states. The block's
``extra`` holds the generator, sampling settings and the reference's identity, so that two
results files say whether their numbers are comparable.
"""
from __future__ import annotations

import datetime as dt
import re

from tokbench.generation.reference import Reference
from tokbench.generation.scoring import GenerationScores
from tokbench.generation.sources import Samples
from tokbench.metrics.registry import get_metric
from tokbench.provenance import git_commit, hardware
from tokbench.results import RESULTS_SCHEMA_VERSION
from tokbench.version import __version__

TASK = "generation"
KINDS = ("discrete", "continuous")
SFID_NOTE = ("sFID is not offered: torch-fidelity's Inception exposes the 64/192/768/2048-d pooled features and "
             "logits, not ADM's spatial mixed_6/conv features")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _entry(name: str, value: float, n: int) -> dict:
    """A dataset-level metric: one value, no interval to estimate."""
    return {"mean": float(value), "ci95": [float(value), float(value)], "n": int(n),
            "higher_is_better": get_metric(name).higher_is_better}


def tokenizer_from_manifest(manifest: dict | None, kind: str | None = None) -> dict:
    """The results file's tokenizer block from a samples manifest, or an ``unknown`` one of ``kind``."""
    if manifest is None:
        if kind not in KINDS:
            raise ValueError("the samples have no manifest.json naming their tokenizer; to write results, state its "
                             "kind with --tokenizer-kind discrete|continuous (it is then recorded as 'unknown')")
        return {"name": "unknown", "family": "unknown", "kind": kind, "config": {}, "checkpoint_sha256": None,
                "parameters": 0, "tokens_per_image": None, "bits_per_image": None,
                "note": "samples without a manifest: tokenizer unknown, parameter count not recorded"}
    tok = manifest["tokenizer"]
    if not isinstance(tok, dict) or tok.get("kind") not in KINDS or not tok.get("spec") or not tok.get("family"):
        raise ValueError("manifest.json: tokenizer must give spec, family and kind (discrete or continuous), "
                         f"got {tok!r}")
    sha = tok.get("sha256")
    return {"name": str(tok["spec"]), "family": str(tok["family"]), "kind": tok["kind"],
            "config": tok.get("config") if isinstance(tok.get("config"), dict) else {},
            "checkpoint_sha256": sha if isinstance(sha, str) and _SHA256.match(sha) else None,
            "parameters": 0, "tokens_per_image": None, "bits_per_image": None,
            "note": "from the samples' manifest; the tokenizer's parameter count is not recorded there"}


def _resolution(image_sizes: dict) -> str:
    """``"256"`` when every image is 256x256, else ``"native"``."""
    if len(image_sizes) == 1:
        h, w = next(iter(image_sizes)).split("x")
        if h == w:
            return h
    return "native"


def generation_extra(scores: GenerationScores, reference: Reference, samples: Samples) -> dict:
    """The ``extra`` of the generation block: generator, sampling settings, reference, samples."""
    manifest = samples.manifest or {}
    generator = manifest.get("generator") or {}
    sampling = manifest.get("sampling") or {}
    return {
        "generator_preset": generator.get("preset", "unknown"),
        "train_steps": generator.get("train_steps"),
        "generator": generator or "unknown",
        "num_samples": scores.num_samples,
        "cfg": sampling.get("cfg"),
        "sampling": sampling or "unknown",
        "manifest_resolution": manifest.get("resolution"),
        "samples": {"name": samples.name, "kind": samples.kind, "path": str(samples.path) if samples.path else None,
                    "content_sha256": samples.content_sha256, "image_sizes": samples.image_sizes,
                    "manifest": bool(samples.manifest)},
        "reference": reference.describe(),
        "inception_score_std": scores.inception_score_std,
        "is_splits": scores.is_splits,
        "k": scores.k,
        "feature_dim": scores.feature_dim,
        "gfid_statistics": scores.reference_stats,
        "sfid": SFID_NOTE,
        "note": "dataset-level statistics; intervals are not estimated (IS: std over splits in inception_score_std)",
    }


def build_results(scores: GenerationScores, reference: Reference, samples: Samples, *, device: str,
                  elapsed_s: float, tokenizer_kind: str | None = None) -> dict:
    """A complete results object (valid under `tokbench.results.validate_results`)."""
    fingerprint = reference.content_sha256 or reference.fingerprint
    if not fingerprint:
        raise ValueError("the reference has no fingerprint (load it with load_reference to write results)")
    metrics = {
        "gfid": _entry("gfid", scores.gfid, scores.num_samples),
        "inception_score": _entry("inception_score", scores.inception_score, scores.num_samples),
        "precision": _entry("precision", scores.precision, scores.num_samples),
        "recall": _entry("recall", scores.recall, scores.num_reference),
    }
    block = {"dataset": reference.name, "num_images": scores.num_samples, "num_skipped": 0, "skipped": [],
             "metrics": metrics, "skipped_metrics": {}, "extra": generation_extra(scores, reference, samples)}
    dataset = {"name": reference.name, "source": "folder", "version": reference.kind, "fingerprint": fingerprint,
               "num_images": reference.num_images, "resolution": _resolution(reference.image_sizes)}
    return {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "tokbench": {"version": __version__, "git_commit": git_commit()},
        "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "tokenizer": tokenizer_from_manifest(samples.manifest, tokenizer_kind),
        "datasets": [dataset],
        "tasks": {TASK: block},
        "hardware": hardware(device),
        "timings": {"total_s": round(elapsed_s, 3), "tasks_s": {TASK: round(elapsed_s, 3)}},
    }
