"""`tokbench gen fit` and `gen sample` on a token dataset written by `gen encode`: resume,
two Gloo ranks, generator checkpoints, deterministic and resumable sampling."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tokbench.generation.checkpoint import load_generator, save_generator
from tokbench.generation.commands.fit import build_cli, export_generator, translate_arguments
from tokbench.generation.sample import SamplingSettings, sample_to_folder
from tokbench.generation.token_encoding import encode_dataset
from helpers import one_thread, stop_at  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def tokens_dir(tmp_path_factory) -> Path:
    """12 images in 2 classes (dark / light), vq tiny at 32 px: 16 tokens each, flipped copies."""
    root = tmp_path_factory.mktemp("gen")
    rng = np.random.default_rng(0)
    for k in range(12):
        cls = "dark" if k % 2 else "light"
        base = 40 if cls == "dark" else 200
        pixels = np.clip(base + rng.normal(0, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
        (root / "images" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "images" / cls / f"{k:02d}.png")
    encode_dataset("vq:size=tiny", root / "images", root / "tokens", resolution=32, flip=True, batch_size=8,
                   progress=False)
    return root / "tokens"


def _fit(tokens: Path, root: Path, stop: int | None = None, resume: bool = False, config: str = "gpt_tiny"):
    argv, _ = translate_arguments(["--config", config, "--tokens", str(tokens), "--trainer.max_steps", "8",
                                   "--trainer.default_root_dir", str(root), "--trainer.logger", "false",
                                   "--trainer.enable_progress_bar", "false", "--trainer.val_check_interval", "4",
                                   "--data.batch_size", "4", "--data.held_out_every", "4",
                                   "--trainer.callbacks", '[{"class_path": "tokbench.training.checkpointing.RunCheckpoint", '
                                                          '"init_args": {"every_n_train_steps": 4}}]'])
    cli = build_cli(argv)
    if stop:
        cli.trainer.callbacks.append(stop_at(stop))
    cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=str(root / "checkpoints" / "last.ckpt") if resume else None)
    return cli


def test_stop_and_resume_gives_the_weights_of_an_uninterrupted_run(tokens_dir, tmp_path):
    whole = _fit(tokens_dir, tmp_path / "whole").model
    stopped = _fit(tokens_dir, tmp_path / "split", stop=4).model
    assert stopped.global_step == 4
    resumed = _fit(tokens_dir, tmp_path / "split", resume=True).model
    assert resumed.global_step == whole.global_step == 8
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name  # weights and EMA weights
    assert whole.trainer.callback_metrics["val/nll_bits_per_image"] > 0


def test_next_scale_generator_trains_from_a_token_dataset_and_exports(tmp_path):
    root = tmp_path
    rng = np.random.default_rng(1)
    for k in range(8):
        (root / "images").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "images" / f"{k}.png")
    encode_dataset("residual_scale:size=tiny", root / "images", root / "tokens", resolution=32, progress=False)
    cli = _fit(root / "tokens", root / "run", config="var_tiny")
    out = export_generator(cli.model, root / "run")
    model, config = load_generator(out)
    assert config["arch"] == "next_scale" and config["train_steps"] == 8
    assert config["tokenizer"]["spec"] == "residual_scale:size=tiny" and config["layout"]["arrangement"] == "scales"
    for name, value in cli.model.ema.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_two_gloo_ranks_give_a_checkpoint_that_loads_in_one_process(tokens_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "tokbench", "gen", "fit", "--config", "gpt_tiny", "--tokens", str(tokens_dir),
                          "--trainer.max_steps", "4", "--trainer.devices", "2", "--trainer.strategy", "ddp",
                          "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(tmp_path / "ddp"),
                          "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                          "--data.batch_size", "4"], capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    model, config = load_generator(tmp_path / "ddp" / "generator")
    assert config["train_steps"] == 4 and config["classes"] == ["dark", "light"]
    ckpt = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4
    ids = torch.randint(0, 256, (2, 16))
    assert model.nll_bits(ids, torch.tensor([0, 1])).shape == (2,)


@pytest.fixture(scope="module")
def generator_dir(tokens_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fit")
    cli = _fit(tokens_dir, root)
    return export_generator(cli.model, root)


def test_sampling_is_deterministic_for_a_seed_and_resumes(generator_dir, tmp_path):
    settings = SamplingSettings(cfg=2.0, top_k=50, seed=5)
    a = sample_to_folder(generator_dir, tmp_path / "a", 6, settings, batch_size=4, progress=False)
    b = sample_to_folder(generator_dir, tmp_path / "b", 6, settings, batch_size=4, npz=True, progress=False)
    files = sorted(p.name for p in a.glob("0*.png"))
    assert files == [f"{i:06d}.png" for i in range(6)]
    # the per-class grid: 2 classes x 3 samples each (per_class 8, only 3 drawn) in rows of 8
    assert Image.open(a / "grid_by_class.png").size == (8 * 34 + 2, 2 * 34 + 2)
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes()
    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest["labels"] == [0, 1, 0, 1, 0, 1] and manifest["sampling"]["cfg"] == 2.0
    assert manifest["tokenizer"]["spec"] == "vq:size=tiny" and manifest["generator"]["arch"] == "gpt"
    with np.load(b / "samples.npz", allow_pickle=False) as batch:
        assert batch["arr_0"].shape == (6, 32, 32, 3) and batch["arr_0"].dtype == np.uint8
        assert np.array_equal(batch["arr_0"][3], np.asarray(Image.open(a / files[3])))
    # Resume: a lost file is redrawn exactly; kept files are not rewritten.
    (a / files[5]).unlink()
    kept = (a / files[0]).stat().st_mtime_ns
    sample_to_folder(generator_dir, tmp_path / "a", 6, settings, batch_size=4, progress=False)
    assert (a / files[5]).read_bytes() == (b / files[5]).read_bytes()
    assert (a / files[0]).stat().st_mtime_ns == kept
    other = sample_to_folder(generator_dir, tmp_path / "c", 6, SamplingSettings(cfg=2.0, top_k=50, seed=6), batch_size=4,
                             progress=False)
    assert any((other / f).read_bytes() != (a / f).read_bytes() for f in files)


def test_sampling_refuses_another_tokenizer_and_bad_classes(generator_dir, tmp_path):
    config = json.loads((generator_dir / "config.json").read_text())
    config["tokenizer"]["sha256"] = "0" * 64
    fake = tmp_path / "gen"
    fake.mkdir()
    (fake / "model.safetensors").write_bytes((generator_dir / "model.safetensors").read_bytes())
    (fake / "config.json").write_text(json.dumps(config))
    import tokbench

    tok_dir = tmp_path / "tok"
    tokbench.create("vq:size=tiny").save_pretrained(str(tok_dir))
    with pytest.raises(ValueError, match="differ from those the generator was trained on"):
        sample_to_folder(fake, tmp_path / "s", 2, SamplingSettings(), tokenizer=str(tok_dir), progress=False)
    with pytest.raises(ValueError, match="'cat' is neither a class index nor a class name"):
        sample_to_folder(generator_dir, tmp_path / "s", 2, SamplingSettings(), classes="cat", progress=False)
    with pytest.raises(ValueError, match="not a generator checkpoint"):
        load_generator(tok_dir)


def test_generator_checkpoints_round_trip(tmp_path):
    from tokbench.generation.gpt import TokenGPT

    model = TokenGPT(30, 16, num_classes=2, width=32, depth=1, heads=2, grid=(4, 4))
    save_generator(model, tmp_path / "g", preset="tiny", tokenizer={"spec": "vq:size=tiny", "sha256": None},
                   train_steps=3)
    loaded, config = load_generator(tmp_path / "g")
    ids = torch.randint(0, 30, (2, 16))
    assert torch.equal(loaded(ids, torch.tensor([0, 1])), model.eval()(ids, torch.tensor([0, 1])))
    assert config["parameters"] == sum(p.numel() for p in model.parameters())


def test_score_report_shows_the_per_class_grid(generator_dir, tmp_path, monkeypatch):
    from tokbench.cli import main

    sample_to_folder(generator_dir, tmp_path / "s", 10, SamplingSettings(seed=1), batch_size=4, progress=False)
    sample_to_folder(generator_dir, tmp_path / "ref", 8, SamplingSettings(seed=2), batch_size=4, progress=False)
    for name in ("grid_by_class.png", "manifest.json"):  # a plain folder of images as the reference
        (tmp_path / "ref" / name).unlink()
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # the stand-in Inception of test_gen_score
    assert main(["gen", "score", str(tmp_path / "s"), "--ref", str(tmp_path / "ref"), "--out", str(tmp_path / "score"),
                 "--features", "test_gen_score:build_standin", "--ref-cache", str(tmp_path / "cache")]) == 0
    report = (tmp_path / "score" / "report.md").read_text()
    assert "grids/generation.png" in report and "one row per class" in report
    assert (tmp_path / "score" / "grids" / "generation.png").read_bytes() == (tmp_path / "s" / "grid_by_class.png").read_bytes()


def test_a_batch_larger_than_the_token_dataset_is_a_clear_error(tokens_dir, tmp_path, capsys):
    from tokbench.cli import main

    assert main(["gen", "fit", "--tokens", str(tokens_dir), "--config", "gpt_tiny", "--data.batch_size", "64",
                 "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"]) == 1
    err = capsys.readouterr().err
    assert "data.batch_size: 64 x 1 rank(s) is more than the 22 training rows of" in err  # 11 of 12 images, flipped
    assert "lower --data.batch_size, or encode more images" in err
