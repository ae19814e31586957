"""``tokbench gen score SAMPLES --ref REF [--out DIR]``: gFID, IS and precision/recall of samples.

SAMPLES is a folder of images (with the ``manifest.json`` of ``tokbench gen sample``, or
without) or an ADM ``.npz`` sample batch; REF an image folder or an ADM reference batch
(`tokbench.generation.reference`). Features come from the rFID Inception (weights from
``--weights-dir`` or the torch hub cache); ``--features MODULE:FUNCTION`` substitutes another
extractor -- ``FUNCTION(device)`` returning a `tokbench.generation.scoring.FeatureFn` -- for
tests and experiments (its id is recorded in the results).
"""
from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the scorer imports torch and scipy: only when the command runs
    from tokbench.generation.scoring import FeatureFn


def build_feature_fn(spec: str | None, weights_dir: str | None, device: str) -> FeatureFn:
    """The Inception of rFID (missing weights: `tokbench.weights.MissingWeightsError`), or ``spec``'s builder."""
    if spec:
        module_name, _, function = spec.partition(":")
        if not module_name or not function:
            raise ValueError(f"--features takes MODULE:FUNCTION, got {spec!r}")
        builder = getattr(importlib.import_module(module_name), function, None)
        if builder is None:
            raise ValueError(f"--features: {module_name} has no function {function!r}")
        return builder(device)
    from tokbench import weights
    from tokbench.metrics.fid import load_inception_generation_features

    path = weights.require(["rfid"], weights_dir, skippable=False)["rfid"]
    return load_inception_generation_features(path, device)


def apply_protocol(args: argparse.Namespace):
    """The ``gen score`` preset named by ``--protocol``, with its IS split size set on ``args``."""
    from tokbench.protocol_registry import get_protocol

    protocol = get_protocol(args.protocol)
    protocol.require_command("gen score")
    if args.is_split_size is not None and args.is_split_size != protocol.is_split_size:
        raise ValueError(f"--protocol {protocol.name} scores IS over splits of {protocol.is_split_size}; "
                         f"drop --is-split-size {args.is_split_size}")
    args.is_split_size = protocol.is_split_size
    return protocol


def protocol_block(protocol, args: argparse.Namespace, results: dict, reference_kind: str) -> dict:
    """The results' ``protocol`` block of a ``gen score`` run, with what keeps it from the published setting."""
    deviations = []
    if reference_kind != "adm_npz":
        deviations.append(f"reference is a {reference_kind}, not ADM's reference batch (its mu/sigma)")
    if args.features:
        deviations.append(f"features from {args.features}, not the FID Inception")
    scored = {"generation": results["tasks"]["generation"]["num_images"]}
    return protocol.record(results["datasets"][0]["resolution"], scored, deviations)


def run(args: argparse.Namespace) -> int:
    from tokbench.generation.reference import load_reference
    from tokbench.generation.score_results import build_results, tokenizer_from_manifest
    from tokbench.generation.scoring import (DEFAULT_BATCH_SIZE, DEFAULT_IS_SPLITS, DEFAULT_K, extract_features,
                                             score_features)
    from tokbench.generation.sources import open_samples
    from tokbench.results import write_results

    started = time.perf_counter()
    args.batch_size = DEFAULT_BATCH_SIZE if args.batch_size is None else args.batch_size
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.is_split_size is not None and args.is_split_size < 1:
        raise ValueError(f"--is-split-size must be >= 1, got {args.is_split_size}")
    protocol = apply_protocol(args) if args.protocol else None
    samples = open_samples(args.samples)
    if args.out:  # a results file needs the tokenizer: fail now rather than after the features
        tokenizer_from_manifest(samples.manifest, args.tokenizer_kind)
    feature_fn = build_feature_fn(args.features, args.weights_dir, args.device)
    reference = load_reference(args.ref, feature_fn, batch_size=args.batch_size, cache_dir=args.ref_cache)
    print(f"reference {reference.name}: {reference.num_images} images "
          f"({'cached features' if reference.from_cache else 'features computed and cached'}; "
          f"FID statistics from {reference.stats_source})")
    pool, logits = extract_features(samples.batches(args.batch_size), feature_fn, progress="sample features")
    scores = score_features(pool, logits, reference, k=DEFAULT_K, is_splits=DEFAULT_IS_SPLITS,
                            is_split_size=args.is_split_size, device=args.device)
    print(f"samples {samples.name}: {scores.num_samples} images")
    print(f"  gFID       {scores.gfid:.4f}")
    print(f"  IS         {scores.inception_score:.4f} +- {scores.inception_score_std:.4f} ({scores.is_splits} splits)")
    print(f"  precision  {scores.precision:.4f}   (k={scores.k})")
    print(f"  recall     {scores.recall:.4f}")
    if args.out:
        results = build_results(scores, reference, samples, device=args.device,
                                elapsed_s=time.perf_counter() - started, tokenizer_kind=args.tokenizer_kind)
        results["protocol"] = None if protocol is None else protocol_block(protocol, args, results, reference.kind)
        out = Path(args.out) / "results.json"
        write_results(out, results)
        write_score_report(Path(args.out), results, Path(args.samples))
        print(f"wrote {out}, report.md, report.html")
    return 0


def write_score_report(out: Path, results: dict, samples: Path) -> None:
    """``report.md``/``.html`` of the scores, with the per-class sample grid `gen sample` drew."""
    import shutil

    from tokbench.generation.sample import CLASS_GRID
    from tokbench.tasks.report import write_report

    grids = {}
    if samples.is_dir() and (samples / CLASS_GRID).is_file():
        (out / "grids").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(samples / CLASS_GRID, out / "grids" / "generation.png")
        grids["generation"] = {"path": "grids/generation.png",
                               "caption": "samples, one row per class (the first classes), as gen sample drew them"}
    write_report(out, [results], grids)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("score", help="gFID / IS / precision-recall of samples against a reference")
    p.add_argument("samples", help="folder of sample images (manifest.json optional) or ADM .npz (arr_0: uint8 NHWC)")
    p.add_argument("--ref", required=True,
                   help="reference: image folder, or ADM reference batch .npz (arr_0, mu, sigma)")
    p.add_argument("--out", help="write OUT/results.json (a 'generation' task block)")
    p.add_argument("--weights-dir", help="folder holding the Inception weights (default: the torch hub cache)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (features and precision/recall distances)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per Inception batch (default: tokbench.generation.scoring.DEFAULT_BATCH_SIZE, 50)")
    p.add_argument("--protocol", help="a sample-score preset (adm-gfid: ADM's reference batch and IS splits); "
                                       "recorded in the results")
    p.add_argument("--is-split-size", type=int, default=None, metavar="N",
                   help="Inception Score over consecutive splits of N samples, as ADM's evaluator (5000) "
                        "(default: tokbench.generation.scoring.DEFAULT_IS_SPLITS, 10, equal splits; the same at "
                        "50,000 samples)")
    p.add_argument("--ref-cache", help="where reference features are cached "
                                       "(default: $TOKBENCH_CACHE/gen_references or ~/.cache/tokbench/gen_references)")
    p.add_argument("--tokenizer-kind", choices=["discrete", "continuous"],
                   help="for --out when the samples have no manifest: the kind of the (unknown) tokenizer")
    p.add_argument("--features", metavar="MODULE:FUNCTION",
                   help="testing/experiments: FUNCTION(device) returns a feature function (uint8 B x 3 x H x W -> "
                        "(pool features, logits)) used instead of the Inception; results record its id")
    p.set_defaults(func=run)
