"""Sub-commands ``eval``, ``compare``, ``validate`` and ``weights``."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


DEFAULT_TASKS = ("reconstruction", "detail", "text")
DEFAULT_RESOLUTION = "256"


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _task_options(args: argparse.Namespace) -> dict[str, dict]:
    from tokbench.task_registry import load_all_tasks

    return {name: options for name, task in load_all_tasks().items() if (options := task.options_from_args(args))}


def run_eval_command(args: argparse.Namespace) -> int:
    from tokbench.tasks.report import summary_text
    from tokbench.tasks.runner import EvalConfig, run_eval

    from tokbench.distributed import init_from_environment
    from tokbench.registry import with_weights

    tasks, resolution, task_options, preprocessing = _split(args.tasks), args.resolution, _task_options(args), "default"
    skip_metrics = _split(args.skip_metric)
    if args.protocol:  # the preset fills what it pins; a flag that contradicts it is refused
        from tokbench.protocol_registry import get_protocol

        protocol = get_protocol(args.protocol)
        tasks, resolution, task_options, skip_metrics = protocol.fill(tasks, resolution, task_options, skip_metrics)
        preprocessing = protocol.preprocessing
    device = init_from_environment(args.device)

    cfg = EvalConfig(tokenizer=with_weights(args.tokenizer, args.weights), tasks=tasks or list(DEFAULT_TASKS),
                     out=Path(args.out), data=Path(args.data) if args.data else None, suite=args.suite,
                     resolution=resolution or DEFAULT_RESOLUTION, batch_size=args.batch_size, device=device,
                     skip_metrics=skip_metrics, weights_dir=args.weights_dir, limit=args.limit,
                     fid_min_images=args.fid_min_images, task_options=task_options, protocol=args.protocol,
                     preprocessing=preprocessing, strict_metrics=args.strict_metrics,
                     workers=args.workers if args.workers is not None else min(4, os.cpu_count() or 1))
    results = run_eval(cfg)
    if results is None:
        return 0
    for task, block in results["tasks"].items():
        for skipped in block["skipped"]:
            print(f"skipped {skipped['file']}: {skipped['reason']}")
    print(summary_text([results]))
    print(f"wrote {cfg.out / 'results.json'}, per_image.csv, report.md, report.html, grids/")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from tokbench.comparability import comparability_warnings
    from tokbench.results import read_results
    from tokbench.tasks.report import summary_text, write_report

    runs = [read_results(Path(d) / "results.json" if Path(d).is_dir() else Path(d)) for d in args.runs]
    for warning in comparability_warnings(runs, [str(d) for d in args.runs]):
        print(f"warning: {warning}", file=sys.stderr)
    print(summary_text(runs))
    if args.out:
        write_report(Path(args.out), runs)
        print(f"wrote {Path(args.out) / 'report.md'} and report.html")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from tokbench.results import validate_results

    path = Path(args.results)
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read JSON ({err})") from err
    errors = validate_results(obj)
    for error in errors:
        print(f"{path}: {error}")
    if not errors:
        print(f"{path}: valid (schema version {obj['schema_version']})")
    return 1 if errors else 0


def run_weights(args: argparse.Namespace) -> int:
    from tokbench import weights

    if args.action == "fetch":
        for path in weights.fetch(_split(args.metrics) + list(getattr(args, "names", [])) or None, args.weights_dir):
            print(f"ok {path}")
        return 0
    rows = [{"metric": m, "file": str(weights.weight_path(m, args.weights_dir)),
             "present": weights.weight_path(m, args.weights_dir).is_file(), "what": spec.purpose}
            for m, spec in weights.WEIGHT_FILES.items()]
    import pandas as pd

    print(pd.DataFrame(rows).to_string(index=False))
    return 0


def _add_task_arguments(parser: argparse.ArgumentParser) -> None:
    from tokbench.task_registry import load_all_tasks

    for task in load_all_tasks().values():
        task.add_arguments(parser)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval``, ``compare``, ``validate`` and ``weights``."""
    p = subparsers.add_parser("eval", help="benchmark a tokenizer on reconstruction, detail and text tasks")
    p.add_argument("--tokenizer", required=True, help="checkpoint directory, .ckpt, or registered name (jpeg:q=50)")
    p.add_argument("--weights", help="released weights of a public tokenizer named by --tokenizer (llamagen-vq16 ...)")
    p.add_argument("--protocol", help="a protocol preset that reproduces a published column (tokbench, llamagen-rfid, "
                                       "var-rfid, vtbench, or a plug-in's): pins tasks, resolution, preprocessing, metrics "
                                       "and recognizer; see README 'Reproducing published tables'")
    p.add_argument("--tasks", default=None,
                   help="comma-separated task names: reconstruction,detail,text,faces,generation and any installed "
                        f"plug-in's (default: {','.join(DEFAULT_TASKS)}, or the protocol's)")
    p.add_argument("--data", help="image folder (recursive; optional manifest.csv/jsonl with file,text; "
                                   "faces.json/csv with face boxes)")
    p.add_argument("--suite", help="built-in suite for every task: photos, detail, text, text-sizes or faces (default: each task's own)")
    p.add_argument("--resolution", default=None, help=f"256 (resize shorter side + center crop), letterbox:N, or native "
                                                       f"(default: {DEFAULT_RESOLUTION}, or the protocol's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", default="runs/eval", help="output folder; rerunning with the same folder resumes")
    p.add_argument("--skip-metric", default="", help="run without these weight-needing metrics: lpips,rfid (fid = rfid) or a plug-in's")
    p.add_argument("--strict-metrics", action="store_true",
                   help="refuse to run when a metric's pretrained weights are missing (default: skip that metric, "
                        "naming it with the reason in the terminal, results.json and the report)")
    p.add_argument("--weights-dir", help="folder holding LPIPS/Inception weights (default: the torch hub cache)")
    p.add_argument("--limit", type=int, help="score N images of each dataset, spread evenly over it (quick looks)")
    p.add_argument("--workers", type=int, help="processes decoding images and running OCR (default: min(4, CPUs))")
    p.add_argument("--fid-min-images", type=int, default=1000, help="rFID only over datasets at least this large")
    from tokbench.cli import defer_arguments

    # Each task's own options (the generation task's --gen-*): loading the tasks imports torch,
    # so they are added only when `eval` itself is parsed or its help shown.
    defer_arguments(p, _add_task_arguments)
    p.set_defaults(func=run_eval_command)

    p = subparsers.add_parser("compare", help="one table and report across several eval runs")
    p.add_argument("runs", nargs="+", help="eval output folders (or results.json files)")
    p.add_argument("--out", help="write report.md / report.html here")
    p.set_defaults(func=run_compare)

    p = subparsers.add_parser("validate", help="check a results.json against the schema")
    p.add_argument("results")
    p.set_defaults(func=run_validate)

    p = subparsers.add_parser("weights", help="pretrained weights of the metrics and training teachers: status or fetch")
    p.add_argument("action", choices=["status", "fetch"])
    p.add_argument("names", nargs="*", help="what to fetch (default: the metrics' weights): lpips rfid parseq "
                                             "dinov2-vits14 dinov2-vitb14")
    p.add_argument("--metrics", help="comma-separated subset: lpips,rfid")
    p.add_argument("--weights-dir")
    p.set_defaults(func=run_weights)
