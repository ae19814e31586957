"""`tokbench train` / `tokbench export`: end to end, resume, bad input, non-finite losses, DDP statistics."""
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

import tokbench
from helpers import stop_at
from tokbench.training.cli import build_cli, shipped_config
from tokbench.training.module import AutoencoderModule, NonFiniteLossError

SMALL = ["--data.image_size", "32", "--data.batch_size", "4", "--data.repeats", "1", "--trainer.val_check_interval", "3",
         "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false"]


def tokbench_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "tokbench", *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def make_folder(folder: Path, n: int = 6) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        base = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(base).resize((48, 48), Image.BICUBIC).save(folder / f"img{i}.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)


def test_train_export_reconstruct_end_to_end(tmp_path):
    make_folder(tmp_path / "data")
    out = tokbench_cli("train", "--config", "vq_tiny", "--data", str(tmp_path / "data"), *SMALL,
                       "--trainer.max_steps", "4", "--model.log_images_every", "2", "--trainer.default_root_dir", str(tmp_path / "run"),
                       "--trainer.logger.init_args.save_dir", str(tmp_path / "run"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "skipped 1 unreadable training images" in out.stdout
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    blob = torch.load(ckpt, weights_only=True)  # our checkpoints never need unpickling
    assert blob["global_step"] == 4 and blob["tokbench"]["family"] == "vq"
    metrics = (next((tmp_path / "run").rglob("metrics.csv"))).read_text()
    for column in ("train/rec_loss", "train/usage", "train/perplexity", "lr", "val/rec_loss"):
        assert column in metrics
    grids = sorted(p.name for p in (tmp_path / "run").rglob("images/step_*.png"))
    assert grids == ["step_0000002.png", "step_0000004.png"], grids
    exported = tmp_path / "exported"
    assert tokbench_cli("export", str(ckpt), str(exported), cwd=tmp_path).returncode == 0
    loaded = tokbench.load(exported)
    from_ckpt = tokbench.load(ckpt)
    x = torch.rand(1, 3, 40, 40)
    assert torch.equal(loaded.reconstruct(x), from_ckpt.reconstruct(x))  # export = the EMA weights
    rec = tokbench_cli("reconstruct", str(exported), str(tmp_path / "data" / "img0.png"), "--out", str(tmp_path / "rec"), cwd=tmp_path)
    assert rec.returncode == 0, rec.stderr
    assert (tmp_path / "rec" / "img0_rec.png").is_file()


@pytest.mark.parametrize("override, key", [(["--model.no_such_key", "1"], "no_such_key"), (["--model.lr", "fast"], "lr"),
                                           (["--data.batch_size", "1.5"], "batch_size"),
                                           (["--trainer.max_stepz", "3"], "max_stepz")])
def test_bad_config_fails_before_training_naming_the_key(tmp_path, override, key):
    with pytest.raises(ValueError, match=key) as error:  # the CLI prints it as one line
        build_cli(["--config", str(shipped_config("vq_tiny")), *override,
                   "--trainer.default_root_dir", str(tmp_path / "run")])
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


def test_unknown_key_in_a_yaml_file_fails_naming_it(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text(shipped_config("vq_tiny").read_text().replace("  lr: 0.002", "  lr: 0.002\n  learning_rat: 3"))
    with pytest.raises(ValueError, match="learning_rat.*did you mean --model.lr"):
        build_cli(["--config", str(config), "--trainer.default_root_dir", str(tmp_path / "run")])


def _fit(tmp_path, steps, resume=False):
    argv = ["--config", str(Path(tokbench.__file__).parent / "training/configs/residual_scale_tiny.yaml"), *SMALL,
            "--trainer.max_steps", "8", "--trainer.default_root_dir", str(tmp_path),
            "--trainer.logger", "false", "--data.root", "builtin:photos", "--model.log_images_every", "0",
            "--trainer.deterministic", "true",
            "--trainer.callbacks", '[{"class_path": "tokbench.training.checkpointing.RunCheckpoint", '
                                   '"init_args": {"every_n_train_steps": 4}}]']
    cli = build_cli(argv)
    cli.trainer.callbacks.append(stop_at(steps))
    ckpt = str(tmp_path / "checkpoints" / "last.ckpt") if resume else None
    cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=ckpt)
    return cli.model


def test_resume_reaches_the_weights_of_an_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)  # bit-identical CPU arithmetic
    # 12 training photos, batch 4: 3 steps per epoch, so step 4 stops in the middle of epoch 1.
    whole = _fit(tmp_path / "whole", 8)
    stopped = _fit(tmp_path / "split", 4)
    assert stopped.global_step == 4
    resumed = _fit(tmp_path / "split", 8, resume=True)
    assert resumed.global_step == whole.global_step == 8
    assert whole.state_dict().keys() == resumed.state_dict().keys()
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name  # weights, EMA weights and codebook statistics
    opt_whole = torch.load(tmp_path / "whole/checkpoints/last.ckpt", weights_only=True)["optimizer_states"]
    opt_resumed = torch.load(tmp_path / "split/checkpoints/last.ckpt", weights_only=True)["optimizer_states"]
    for a, b in zip(opt_whole[0]["state"].values(), opt_resumed[0]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path):
    import lightning as L

    from tokbench.training.checkpointing import AtomicCheckpointIO, RunCheckpoint
    from tokbench.training.data import ImageDataModule

    module = AutoencoderModule("vq:size=tiny", max_steps=10)
    real_forward = module.model_forward

    def poisoned(x):
        out = real_forward(x)
        if module.global_step >= 2:
            out.reconstruction = out.reconstruction * float("nan")
        return out

    module.model_forward = poisoned
    trainer = L.Trainer(max_steps=10, accelerator="cpu", logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, callbacks=[RunCheckpoint(every_n_train_steps=1)],
                        plugins=[AtomicCheckpointIO()], limit_val_batches=0)
    with pytest.raises(NonFiniteLossError, match="at step 2"):
        trainer.fit(module, ImageDataModule(image_size=32, batch_size=4, num_workers=0))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def _train_cli(root: Path, *args: str):
    return tokbench_cli("train", "--config", "vq_tiny", "--data.repeats", "1", "--trainer.max_steps", "3",
                        "--trainer.logger", "false", "--trainer.limit_val_batches", "0", "--model.log_images_every", "0",
                        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root),
                        # restarts from step 2 on: the gathered batch and rank 0's choice must match one process
                        "--model.tokenizer_options", '{"dead_code_steps": 2}', *args, cwd=root.parent)


def test_two_process_ddp_codebook_statistics_equal_one_process(tmp_path):
    one = _train_cli(tmp_path / "one", "--data.batch_size", "4")
    assert one.returncode == 0, one.stderr[-3000:]
    two = _train_cli(tmp_path / "two", "--data.batch_size", "2", "--trainer.strategy", "ddp", "--trainer.devices", "2",
                     "--trainer.accelerator", "cpu")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "Starting with 2 processes" in two.stdout + two.stderr
    a = torch.load(tmp_path / "one/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "two/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert int(a["tokenizer.quantize.step"]) == int(b["tokenizer.quantize.step"]) == 3
    for key in ("step", "last_hit_step", "last_restart_step", "hit_ema"):
        name = f"tokenizer.quantize.{key}"
        assert torch.equal(a[name], b[name]), name  # usage and perplexity derive from these
    assert int(a["tokenizer.quantize.last_restart_step"].max()) > 0  # restarts did happen
    # Weights: equal up to the order of floating-point sums, which Adam amplifies to about
    # one learning rate on parameters whose gradient is nearly zero.
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=2e-3), name


def test_resume_flag_finds_the_runs_last_checkpoint_or_says_it_is_missing(tmp_path):
    import argparse

    from tokbench.training.cli import run_train, translate_arguments

    argv, resume = translate_arguments(["--config", "vq_tiny", "--data", "builtin:photos", "--resume", "--model.lr", "1"])
    assert resume and argv == ["--config", str(shipped_config("vq_tiny")), "--data.root", "builtin:photos", "--model.lr", "1"]
    args = argparse.Namespace(rest=["--config", "vq_tiny", "--resume", "--trainer.default_root_dir", str(tmp_path / "run"),
                                    "--trainer.logger", "false"])
    with pytest.raises(FileNotFoundError, match="last.ckpt"):
        run_train(args)


def test_train_writes_checkpoints_atomically_by_default(tmp_path):
    from tokbench.training.checkpointing import AtomicCheckpointIO

    cli = build_cli(["--config", str(shipped_config("vq_tiny")), "--trainer.logger", "false",
                     "--trainer.default_root_dir", str(tmp_path)])
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_compiled_training_matches_eager(tmp_path):
    # --model.compile true: torch.compile (inductor; C++ on CPU) of the tokenizer's forward.
    # The same two steps give the same losses as eager up to the reordering of float sums.
    def run(compiled: bool, root: Path):
        argv = ["--config", str(shipped_config("vq_tiny")), *SMALL, "--trainer.max_steps", "2", "--model.max_steps", "2",
                "--trainer.val_check_interval", "2", "--trainer.default_root_dir", str(root), "--trainer.logger", "false",
                "--data.root", "builtin:photos", "--model.log_images_every", "0", "--trainer.callbacks", "[]",
                "--trainer.enable_checkpointing", "false", "--model.compile", str(compiled).lower()]
        cli = build_cli(argv)
        cli.trainer.fit(cli.model, cli.datamodule)
        return cli.model, cli.trainer.callback_metrics

    _, eager = run(False, tmp_path / "eager")
    model, compiled = run(True, tmp_path / "compiled")
    assert hasattr(model.model_forward, "_torchdynamo_orig_callable"), "the forward was not compiled"
    for key in ("train/rec_loss", "train/quant_loss", "val/rec_loss"):
        assert torch.allclose(compiled[key], eager[key], rtol=1e-3, atol=1e-6), (key, compiled[key], eager[key])


def test_bf16_mixed_precision_trains_with_fp32_weights(tmp_path):
    # The GPU recipes' precision, on CPU autocast: losses stay finite and the weights (and so
    # the checkpoint) stay fp32. (That the codebook search ignores autocast is tested in
    # test_nearest_codeword.py.)
    argv = ["--config", str(shipped_config("residual_scale_tiny")), *SMALL, "--trainer.max_steps", "4",
            "--model.max_steps", "4", "--trainer.precision", "bf16-mixed", "--trainer.default_root_dir", str(tmp_path),
            "--trainer.logger", "false", "--data.root", "builtin:photos", "--model.log_images_every", "0"]
    cli = build_cli(argv)
    cli.trainer.fit(cli.model, cli.datamodule)
    metrics = cli.trainer.callback_metrics
    assert cli.trainer.global_step == 4
    assert all(torch.isfinite(metrics[k]) for k in ("train/rec_loss", "train/quant_loss", "val/rec_loss"))
    weights = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())


def test_tensorboard_logger_gets_the_losses_codebook_stats_and_image_grid(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install tensorboard)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    argv = ["--config", str(shipped_config("vq_tiny")), *SMALL, "--trainer.max_steps", "4", "--model.max_steps", "4",
            "--trainer.default_root_dir", str(tmp_path), "--data.root", "builtin:photos", "--model.log_images_every", "2",
            "--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger", "--trainer.logger.save_dir", str(tmp_path)]
    cli = build_cli(argv)
    cli.trainer.fit(cli.model, cli.datamodule)
    events = EventAccumulator(str(next(tmp_path.rglob("events.out.tfevents.*")).parent))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/rec_loss", "train/usage", "train/perplexity", "lr", "train/images_per_s", "val/rec_loss"} <= scalars
    assert [e.step for e in events.Images("val/reconstructions")] == [2, 4]


def test_wandb_logger_gets_the_image_grids_offline(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb is not installed (pip install wandb)")
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(key, value)  # never the network
    argv = ["--config", str(shipped_config("vq_tiny")), *SMALL, "--trainer.max_steps", "4", "--model.max_steps", "4",
            "--trainer.default_root_dir", str(tmp_path), "--data.root", "builtin:photos", "--model.log_images_every", "2",
            "--trainer.logger", "lightning.pytorch.loggers.WandbLogger", "--trainer.logger.save_dir", str(tmp_path),
            "--trainer.logger.project", "tokbench-test"]
    cli = build_cli(argv)
    cli.trainer.fit(cli.model, cli.datamodule)
    wandb.finish()
    run = next(tmp_path.rglob("offline-run-*"))
    # (offline runs keep the scalars only in their binary .wandb log; the image grids are files)
    assert len(list(run.rglob("media/images/val/reconstructions_*.png"))) == 2
