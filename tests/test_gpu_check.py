"""`scripts/gpu_check.sh` runs offline within its time budget, and the benchmarks it calls work
(on the CPU here); the model-FLOPs counting behind their MFU columns."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GPU_CHECK = ROOT / "scripts" / "gpu_check.sh"


def _load_mfu():
    spec = importlib.util.spec_from_file_location("mfu", ROOT / "benchmarks" / "mfu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args, timeout=300):
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "TOKBENCH_DISABLE_CPU_EXT": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _table(stdout: str) -> list[dict]:
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    return [dict(zip(header, (v.strip() for v in line.strip("|").split("|")))) for line in lines[2:]]


def test_step_deadlines_fit_in_six_minutes():
    limits = [int(m) for m in re.findall(r"^step \S+ (\d+) ", GPU_CHECK.read_text(), flags=re.M)]
    assert len(limits) == 7 and sum(limits) <= 340, limits  # + start-up and the no-GPU probe: < 360 s


def test_without_a_gpu_it_says_so_and_exits_2(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OUT": str(tmp_path / "out"), "PYTHON": sys.executable}
    out = subprocess.run(["bash", str(GPU_CHECK)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and "no CUDA GPU" in out.stderr
    assert not (tmp_path / "out" / "summary.md").exists()  # nothing else ran


def test_training_step_needs_no_weights_and_no_data_set(monkeypatch):
    # The overrides the script passes: a random LPIPS backbone (no download) and the built-in
    # photos listed often enough for batch 16 over its 13 steps.
    from tokbench import weights
    from tokbench.training.cli import build_cli, shipped_config

    overrides = re.search(r'^TRAIN_OVERRIDES="([^"]+)"', GPU_CHECK.read_text(), flags=re.M).group(1).split()
    monkeypatch.setattr(weights, "require", lambda *a, **k: (_ for _ in ()).throw(AssertionError("weights asked for")))
    cli = build_cli(["--config", str(shipped_config("vq_small")), "--trainer.accelerator", "cpu",
                     "--trainer.logger", "false", "--trainer.callbacks", "[]", "--data.image_size", "64", *overrides])
    data = cli.datamodule
    data.setup("fit")
    assert data.hparams.root == "builtin:photos"
    assert len(data.train_set) >= 16 * 13


def test_generator_benchmark_reports_flops_mfu_and_sampling():
    rows = _table(_run("benchmarks/generator_throughput.py", "--grid", "4", "--batch", "2", "--steps", "1",
                       "--sample-batch", "2", "--sample-repeats", "1", "--peak-tflops", "1"))
    train, sample = rows
    assert train["row"] == "train eager" and float(train["GFLOP_per_step"]) > 0 and float(train["MFU_%"]) > 0
    # MFU = achieved TFLOP/s against the given 1 TFLOP/s peak
    assert abs(float(train["MFU_%"]) - 100 * float(train["TFLOP_per_s"])) <= 0.01 * float(train["MFU_%"]) + 1e-3
    assert sample["row"] == "sample eager" and float(sample["images_per_s"]) > 0


def test_tokenizer_benchmark_times_both_precisions():
    rows = _table(_run("benchmarks/tokenizer_throughput.py", "--names", "vq:size=tiny", "--batch", "1",
                       "--image-size", "32", "--repeats", "1"))
    assert rows[0]["tokenizer"] == "vq:size=tiny"
    for column in ("encode_img_s_fp32", "decode_img_s_bf16"):
        assert float(rows[0][column]) > 0
    assert 0 <= float(rows[0]["ids_unchanged_by_bf16"]) <= 1


def test_flops_are_counted_from_the_real_shapes():
    mfu = _load_mfu()
    layer = torch.nn.Linear(32, 16)
    x = torch.randn(8, 32, requires_grad=True)
    with mfu.counted_flops() as flops:
        layer(x).sum().backward()
    # forward 2 B I O, backward twice that (input and weight gradients)
    assert flops() == 3 * 2 * 8 * 32 * 16


def test_peak_flops_needs_a_known_gpu_or_a_given_peak():
    mfu = _load_mfu()
    assert mfu.peak_flops("cpu", "32-true") is None
    assert mfu.peak_flops("cpu", "32-true", override_tflops=2.0) == 2e12
    assert mfu.precision_kind("bf16-mixed") == "bf16" and mfu.precision_kind(torch.float32) == "fp32"
    row = mfu.throughput_columns(2e12, 0.5, 8e12)
    assert row["TFLOP_per_s"] == 4.0 and row["MFU_%"] == 50.0
    assert "MFU_%" not in mfu.throughput_columns(2e12, 0.5, None)
