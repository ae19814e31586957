"""`tokbench eval` end to end on the built-in suites and on bad folders."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tokbench.tasks.runner import EvalConfig, Interrupted, run_eval

SKIP = ["lpips", "rfid"]


@pytest.fixture(autouse=True, scope="module")
def ocr_cache(tmp_path_factory):
    # Hermetic: the OCR cache of original images lives in this test session only.
    old = os.environ.get("TOKBENCH_CACHE")
    os.environ["TOKBENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("TOKBENCH_CACHE", None)
    else:
        os.environ["TOKBENCH_CACHE"] = old


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tokbench", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def metric(results, task, name):
    return results["tasks"][task]["metrics"][name]["mean"]


def evaluate(tmp_path, spec, tasks, **kw):
    return run_eval(EvalConfig(tokenizer=spec, tasks=tasks, out=tmp_path / spec.replace(":", "_"), skip_metrics=SKIP, **kw))


TEXT_LIMIT = 5  # Tesseract is slow: 5 images spread over the suite (11 to 56 px, a sign, a photo)


def test_text_suite_identity_is_readable_and_cer_rises_as_jpeg_quality_falls(tmp_path):
    identity = evaluate(tmp_path, "identity", ["text"], limit=TEXT_LIMIT)
    assert metric(identity, "text", "cer_gt") <= 0.02
    cers = [metric(evaluate(tmp_path, f"jpeg:q={q}", ["text"], limit=TEXT_LIMIT), "text", "cer_gt") for q in (60, 15, 5)]
    assert cers[0] <= cers[1] < cers[2], cers
    assert cers[2] > 5 * max(metric(identity, "text", "cer_gt"), 0.005)
    bound = identity["tasks"]["text"]["extra"]["identity_upper_bound"]
    assert bound["cer_gt"]["mean"] == metric(identity, "text", "cer_gt")


def test_detail_figures_fall_as_the_resize_factor_grows(tmp_path):
    runs = [evaluate(tmp_path, f"resize:f={f}", ["detail"]) for f in (2, 4, 8)]
    resolved = [metric(r, "detail", "resolved_frequency") for r in runs]
    kept = [metric(r, "detail", "energy_kept") for r in runs]
    assert resolved[0] > resolved[1] > resolved[2], resolved
    assert kept[0] > kept[1] > kept[2], kept


def _comparable(results):
    return {k: v for k, v in results.items() if k not in ("created", "timings")}


def test_interrupted_run_resumes_to_the_same_files(tmp_path):
    common = dict(tokenizer="jpeg:q=30", tasks=["reconstruction", "detail"], skip_metrics=SKIP, limit=10, batch_size=3)
    whole = run_eval(EvalConfig(out=tmp_path / "whole", **common))
    with pytest.raises(Interrupted):
        run_eval(EvalConfig(out=tmp_path / "resumed", stop_after=7, **common))
    partial = sum(1 for _ in (tmp_path / "resumed" / "cache").glob("*.jsonl"))
    assert partial >= 1 and not (tmp_path / "resumed" / "results.json").exists()
    resumed = run_eval(EvalConfig(out=tmp_path / "resumed", **common))
    assert _comparable(resumed) == _comparable(whole)
    assert (tmp_path / "resumed" / "per_image.csv").read_text() == (tmp_path / "whole" / "per_image.csv").read_text()
    with pytest.raises(ValueError, match="other settings"):
        run_eval(EvalConfig(out=tmp_path / "resumed", **{**common, "tokenizer": "jpeg:q=90"}))


def make_bad_folder(folder: Path) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"good{i}.png")
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[:300])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("this is not an image")
    Image.new("RGB", (1, 1)).save(folder / "tiny.png")
    Image.fromarray(rng.integers(0, 255, (30, 30), dtype=np.uint8), mode="L").save(folder / "sub_gray.png")


def test_bad_files_are_skipped_and_listed(tmp_path):
    make_bad_folder(tmp_path / "data")
    out = cli("eval", "--tokenizer", "jpeg:q=50", "--tasks", "reconstruction", "--data", str(tmp_path / "data"),
              "--resolution", "native", "--skip-metric", "lpips,rfid", "--out", str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    block = results["tasks"]["reconstruction"]
    assert block["num_images"] == 4
    reasons = {s["file"]: s["reason"] for s in block["skipped"]}
    assert set(reasons) == {"truncated.jpg", "empty.png", "notes.png", "tiny.png"}
    assert "zero-byte" in reasons["empty.png"] and "too small" in reasons["tiny.png"]
    for name in reasons:
        assert f"skipped {name}" in out.stdout


def test_empty_folder_and_missing_weights_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    out = cli("eval", "--tokenizer", "identity", "--data", str(tmp_path / "empty"), "--skip-metric", "lpips,rfid",
              "--out", str(tmp_path / "o1"))
    assert out.returncode == 1 and "contains no image files" in out.stderr and "Traceback" not in out.stderr
    out = cli("eval", "--tokenizer", "identity", "--weights-dir", str(tmp_path / "no_weights"), "--strict-metrics",
              "--out", str(tmp_path / "o2"))
    assert out.returncode == 1
    assert "alexnet-owt-7be5be79.pth" in out.stderr and "tokbench weights fetch" in out.stderr
    assert "--skip-metric" in out.stderr
    assert not (tmp_path / "o2").exists(), "no work may start before the weights check"
    # The cheapest mistakes are reported first, before the weights check.
    out = cli("eval", "--tokenizer", "jpg:q=5", "--weights-dir", str(tmp_path / "no_weights"), "--strict-metrics",
              "--out", str(tmp_path / "o3"))
    assert out.returncode == 1 and "jpg" in out.stderr and "alexnet" not in out.stderr, out.stderr
    if not torch.cuda.is_available():
        out = cli("eval", "--tokenizer", "identity", "--device", "cuda", "--out", str(tmp_path / "o4"))
        assert out.returncode == 1 and "no CUDA device is available" in out.stderr, out.stderr


def test_letterbox_and_manifest_ground_truth(tmp_path):
    from tokbench.tasks.suites import load_suite

    data = tmp_path / "signs"
    data.mkdir()
    item = next(i for i in load_suite("text").items if i.meta["layout"] == "sign")
    wide = np.full((256, 400, 3), 255, np.uint8)
    wide[:, 72:328] = item.image
    Image.fromarray(wide).save(data / "sign.png")
    (data / "manifest.csv").write_text(f"file,text\nsign.png,\"{item.meta['text']}\"\n")
    results = run_eval(EvalConfig(tokenizer="identity", tasks=["text"], data=data, resolution="letterbox:256",
                                  skip_metrics=SKIP, out=tmp_path / "out"))
    assert metric(results, "text", "cer_gt") == 0.0


def test_validate_and_compare_commands(tmp_path):
    a = evaluate(tmp_path, "jpeg:q=20", ["reconstruction"], limit=4)
    b = evaluate(tmp_path, "jpeg:q=80", ["reconstruction"], limit=4)
    assert metric(a, "reconstruction", "psnr") < metric(b, "reconstruction", "psnr")
    out = cli("compare", str(tmp_path / "jpeg_q=20"), str(tmp_path / "jpeg_q=80"), "--out", str(tmp_path / "cmp"))
    assert out.returncode == 0, out.stderr
    assert "jpeg:q=20" in out.stdout and (tmp_path / "cmp" / "plots" / "rate_distortion.png").is_file()
    assert "jpeg:q=80" in (tmp_path / "cmp" / "report.html").read_text()
    assert cli("validate", str(tmp_path / "jpeg_q=20" / "results.json")).returncode == 0
    broken = json.loads((tmp_path / "jpeg_q=20" / "results.json").read_text())
    broken["tasks"]["reconstruction"]["metrics"]["ssim"]["mean"] = 3.0
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    out = cli("validate", str(tmp_path / "broken.json"))
    assert out.returncode == 1 and "$.tasks.reconstruction.metrics.ssim" in out.stdout


def test_two_gloo_ranks_give_the_one_process_results(tmp_path):
    args = ["--tokenizer", "jpeg:q=40", "--tasks", "reconstruction,detail", "--limit", "7",
            "--skip-metric", "lpips,rfid", "--batch-size", "2"]
    single = cli("eval", *args, "--out", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
                          "-m", "tokbench", "eval", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    assert len(list((tmp_path / "two" / "cache").glob("reconstruction.r*.jsonl"))) == 2
    one_csv = pd.read_csv(tmp_path / "one" / "per_image.csv")
    two_csv = pd.read_csv(tmp_path / "two" / "per_image.csv")
    pd.testing.assert_frame_equal(one_csv, two_csv)
    r1 = json.loads((tmp_path / "one" / "results.json").read_text())
    r2 = json.loads((tmp_path / "two" / "results.json").read_text())
    assert r1["tasks"] == r2["tasks"]
