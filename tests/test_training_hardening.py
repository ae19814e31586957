"""`tokbench train` under changed root dirs, changed step counts and kills (issue #10, items 13-15)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from tokbench.training.checkpointing import RunCheckpoint, resume_checkpoint
from tokbench.training.cli import build_cli, run_train, shipped_config
from tokbench.training.schedule import schedule_length

SMALL = ["--data.image_size", "32", "--data.batch_size", "4", "--data.repeats", "1", "--data.root", "builtin:photos",
         "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1"]
CONFIGS = sorted(p.stem for p in shipped_config("vq_tiny").parent.glob("*.yaml"))


class CrashAt(L.Callback):
    """Raises after ``step`` steps, as a kill would end the run: no end-of-training hooks run."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            raise RuntimeError(f"killed at step {trainer.global_step}")


# -- 13: everything a run writes goes under its root dir --------------------------------------

def test_logs_checkpoints_and_grids_go_under_the_runs_root_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the shipped configs' relative paths would land
    for run, extra in (("a", []), ("b", []), ("c", ["--trainer.logger.init_args.save_dir", str(tmp_path / "mylogs")])):
        cli = build_cli(["--config", str(shipped_config("vq_tiny")), *SMALL, "--trainer.max_steps", "2",
                         "--trainer.val_check_interval", "2", "--model.log_images_every", "2",
                         "--trainer.default_root_dir", str(tmp_path / run), *extra])
        cli.trainer.fit(cli.model, cli.datamodule)
    for run in ("a", "b"):
        root = tmp_path / run
        assert [p.relative_to(root).as_posix() for p in root.rglob("metrics.csv")] == ["logs/version_0/metrics.csv"]
        assert (root / "checkpoints" / "last.ckpt").is_file()
        assert [p.name for p in root.rglob("step_*.png")] == ["step_0000002.png"]
    # A logger path set explicitly is kept: logs (and grids) there, checkpoints under the root dir.
    assert [p.relative_to(tmp_path).as_posix() for p in (tmp_path / "mylogs").rglob("metrics.csv")] == \
        ["mylogs/logs/version_0/metrics.csv"]
    assert (tmp_path / "c" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "runs").exists() and not (tmp_path / "images").exists()


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_leave_log_paths_and_schedule_length_to_the_trainer(name):
    config = yaml.safe_load(shipped_config(name).read_text())
    assert "save_dir" not in config["trainer"]["logger"]["init_args"]
    assert "max_steps" not in config["model"] and config["trainer"]["max_steps"] > 0
    checkpoints = [c["init_args"] for c in config["trainer"]["callbacks"] if c["class_path"].endswith("RunCheckpoint")]
    assert len(checkpoints) == 1 and 0 < checkpoints[0].get("every_seconds", 600) <= 600


# -- 14: one setting for the run's length ------------------------------------------------------

def test_lr_schedule_spans_the_trainers_max_steps(tmp_path):
    cli = build_cli(["--config", str(shipped_config("vq_tiny")), *SMALL, "--trainer.max_steps", "6",
                     "--model.warmup_steps", "0", "--trainer.logger", "false", "--trainer.callbacks", "[]",
                     "--trainer.enable_checkpointing", "false", "--trainer.limit_val_batches", "0",
                     "--model.log_images_every", "0", "--trainer.default_root_dir", str(tmp_path)])
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step == 6
    h = cli.model.hparams
    # The cosine has reached its floor at the run's last step (over the config's 300 it would still be near lr).
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(h.lr * h.min_lr_ratio)


def test_a_schedule_length_that_differs_from_the_run_is_refused_before_training(tmp_path):
    args = argparse.Namespace(rest=["--config", "vq_tiny", *SMALL, "--trainer.max_steps", "60", "--model.max_steps", "300",
                                    "--trainer.default_root_dir", str(tmp_path / "run")])
    with pytest.raises(ValueError, match=r"model.max_steps \(300\) differs from trainer.max_steps \(60\)"):
        run_train(args)
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert schedule_length(None, 60) == schedule_length(60, 60) == 60
    assert schedule_length(None, -1, estimated_steps=120.0) == 120 and schedule_length(50, -1) == 50
    with pytest.raises(ValueError, match="trainer.max_steps is not set"):
        schedule_length(None, -1, estimated_steps=float("inf"))


# -- 15: a killed run can always resume ---------------------------------------------------------

def test_run_shorter_than_its_step_interval_is_resumable_after_a_kill(tmp_path):
    # The shipped config saves every 100 steps and every 10 minutes; this run has 8 steps,
    # each made to last 4 simulated minutes: saves at minutes 12 and 24 (steps 3 and 6).
    root = tmp_path / "run"
    argv = ["--config", "vq_tiny", *SMALL, "--trainer.max_steps", "8", "--trainer.logger", "false",
            "--trainer.limit_val_batches", "0", "--model.log_images_every", "0", "--trainer.default_root_dir", str(root)]
    cli = build_cli(["--config", str(shipped_config("vq_tiny")), *argv[2:]])
    [checkpoint] = [c for c in cli.trainer.callbacks if isinstance(c, RunCheckpoint)]
    assert (checkpoint._every_n_train_steps, checkpoint.every_seconds) == (100, 600)
    minutes = iter(range(0, 1000, 4))
    checkpoint.clock = lambda: 60.0 * next(minutes)
    cli.trainer.callbacks.append(CrashAt(7))
    with pytest.raises(RuntimeError, match="killed at step 7"):
        cli.trainer.fit(cli.model, cli.datamodule)
    assert torch.load(resume_checkpoint(root), weights_only=True)["global_step"] == 6
    assert run_train(argparse.Namespace(rest=[*argv, "--resume"])) == 0
    assert torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8


def test_resume_error_says_where_it_looked_and_why_nothing_is_there(tmp_path):
    root = tmp_path / "run"
    with pytest.raises(FileNotFoundError) as err:
        resume_checkpoint(root)
    message = str(err.value)
    assert f"no checkpoint at {root / 'checkpoints' / 'last.ckpt'}" in message
    assert f"the folder {root / 'checkpoints'} does not exist" in message and "\n" not in message
    (root / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="the folder is empty"):
        resume_checkpoint(root)
    (root / "checkpoints" / "last.ckpt.tmp").write_bytes(b"half")
    with pytest.raises(FileNotFoundError, match=r"holds only last.ckpt.tmp, a save that was interrupted"):
        resume_checkpoint(root)
    # Through the command: the same message, before any training.
    args = argparse.Namespace(rest=["--config", "vq_tiny", "--resume", "--trainer.logger", "false",
                                    "--trainer.default_root_dir", str(tmp_path / "other")])
    with pytest.raises(FileNotFoundError, match=f"no checkpoint at {tmp_path / 'other' / 'checkpoints' / 'last.ckpt'}"):
        run_train(args)


def test_tokbench_train_killed_with_sigkill_resumes_from_its_time_based_checkpoint(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "run"
    # Steps every 1000, time every 2 s: only the time bound can save before the kill.
    args = ["--config", "vq_tiny", *SMALL, "--trainer.max_steps", "30", "--trainer.limit_val_batches", "0",
            "--model.log_images_every", "0", "--trainer.default_root_dir", str(root),
            "--trainer.callbacks", '[{"class_path": "tokbench.training.checkpointing.RunCheckpoint", '
                                   '"init_args": {"every_n_train_steps": 1000, "every_seconds": 2}}]']
    command = [sys.executable, "-m", "tokbench", "train", *args]
    run = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = root / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(run.pid, signal.SIGKILL)
    _, err = run.communicate(timeout=60)
    assert run.returncode == -signal.SIGKILL, err[-3000:]  # killed mid-run, not finished
    killed_at = torch.load(last, weights_only=True)["global_step"]
    assert 0 < killed_at < 30
    # Resumed in this process (the same code path as the command, one interpreter start less).
    assert run_train(argparse.Namespace(rest=[*args, "--resume"])) == 0
    assert torch.load(last, weights_only=True)["global_step"] == 30
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("metrics.csv")) == \
        ["logs/version_0/metrics.csv", "logs/version_1/metrics.csv"]
