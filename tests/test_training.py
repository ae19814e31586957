"""`tokbench train` / `tokbench export`: end to end, resume, bad input, non-finite losses, DDP statistics."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

import tokbench
from tokbench.quantize import VectorQuantizer
from tokbench.training.cli import build_cli
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
                                           (["--data.batch_size", "1.5"], "batch_size")])
def test_bad_config_fails_before_training_naming_the_key(tmp_path, override, key):
    out = tokbench_cli("train", "--config", "vq_tiny", *override, "--trainer.default_root_dir", str(tmp_path / "run"), cwd=tmp_path)
    assert out.returncode != 0
    assert key in out.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def _fit(tmp_path, steps, resume=False):
    argv = ["--config", str(Path(tokbench.__file__).parent / "training/configs/residual_scale_tiny.yaml"), *SMALL,
            "--trainer.max_steps", str(steps), "--model.max_steps", "6", "--trainer.default_root_dir", str(tmp_path),
            "--trainer.logger", "false", "--data.root", "builtin:photos", "--model.log_images_every", "0",
            "--trainer.deterministic", "true",
            "--trainer.callbacks", '[{"class_path": "tokbench.training.checkpointing.RunCheckpoint", '
                                   '"init_args": {"every_n_train_steps": 3}}]']
    cli = build_cli(argv)
    ckpt = str(tmp_path / "checkpoints" / "last.ckpt") if resume else None
    cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=ckpt)
    return cli.model


def test_resume_reaches_the_weights_of_an_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)  # bit-identical CPU arithmetic
    whole = _fit(tmp_path / "whole", 6)
    _fit(tmp_path / "split", 3)
    resumed = _fit(tmp_path / "split", 6, resume=True)
    assert resumed.global_step == whole.global_step == 6
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


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


def _quantizer_steps(z_steps, rank=None, world=None):
    torch.manual_seed(0)
    q = VectorQuantizer(32, 4, use_ema=True, ema_decay=0.9, dead_code_steps=2).train()
    for z in z_steps:
        if rank is not None:
            z = z.chunk(world)[rank]
        q(z, channel_dim=1)
    return {k: v.clone() for k, v in q.state_dict().items()}


def _ddp_worker(rank, world, port, z_steps, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        state = _quantizer_steps(z_steps, rank, world)
        if rank == 0:
            queue.put(state)
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_codebook_statistics_equal_one_process():
    torch.manual_seed(1)
    z_steps = [torch.randn(16, 4, 1) * 2 + 3 for _ in range(4)]
    single = _quantizer_steps(z_steps)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, 29531, z_steps, queue)) for r in range(2)]
    for p in procs:
        p.start()
    ddp = queue.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for key in ("hit_ema", "last_hit_step", "ema_cluster_size", "step"):
        assert torch.equal(single[key], ddp[key]), key
    for key in ("ema_embed_sum", "embedding"):
        # the restart draws from the gathered batch: same pool, same choice, same codes
        assert torch.allclose(single[key], ddp[key], atol=1e-5), key
