"""`tokbench gen` refusing what would mix data or crash (issue #23, items 4 and 5).

Resuming must find the token dataset and the generator the run started with; arguments and
files that cannot be used get one line naming them, never a traceback.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tokbench.cli import main
from tokbench.generation.checkpoint import load_generator, save_generator
from tokbench.generation.token_data import TOKENS_NAME, TokenDataset
from tokbench.generation.token_encoding import encode_dataset
from helpers import one_thread  # noqa: F401  (autouse fixture)


def images(root: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for k in range(6):
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "images" / f"{k}.png")
    return root / "images"


@pytest.fixture(scope="module")
def token_sets(tmp_path_factory) -> tuple[Path, Path]:
    """Two token datasets of the same tokenizer and layout, from different images."""
    root = tmp_path_factory.mktemp("tok")
    for name, seed in (("a", 0), ("b", 1)):
        encode_dataset("vq:size=tiny", images(root / name, seed), root / name / "tokens", resolution=32,
                       batch_size=8, progress=False)
    return root / "a" / "tokens", root / "b" / "tokens"


def fit_args(tokens: Path, run: Path, *extra: str) -> list[str]:
    return ["gen", "fit", "--config", "gpt_tiny", "--tokens", str(tokens), "--trainer.max_steps", "2",
            "--trainer.default_root_dir", str(run), "--trainer.logger", "false", "--trainer.enable_progress_bar",
            "false", "--data.batch_size", "2", "--data.held_out_every", "3", "--trainer.limit_val_batches", "0",
            *extra]


@pytest.fixture(scope="module")
def run_a(token_sets, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    assert main(fit_args(token_sets[0], run)) == 0
    return run


def one_line_error(capsys, args: list[str]) -> str:
    """Run the CLI on ``args``: it must fail with one ``tokbench: error:`` line and no traceback."""
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]  # progress bars may come before it
    assert last.startswith("tokbench: error: "), err
    return last


# -- item 4: resume checks identity ---------------------------------------------------------------------
def test_fit_resume_on_another_token_dataset_is_refused(token_sets, run_a, capsys):
    a, b = token_sets
    assert TokenDataset(a).fingerprint() != TokenDataset(b).fingerprint()
    err = one_line_error(capsys, fit_args(b, run_a, "--trainer.max_steps", "3", "--resume"))
    assert f"this run was trained on the token dataset {a.resolve()}" in err and f"--tokens {b.resolve()}" in err
    assert torch.load(run_a / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2  # untouched


def test_sample_resume_after_the_generator_changed_is_refused(run_a, tmp_path, capsys):
    gen = run_a / "generator"
    args = ["gen", "sample", "--generator", str(gen), "--out", str(tmp_path / "s"), "--num", "2", "--batch-size", "1"]
    assert main(args) == 0
    (tmp_path / "s" / "000001.png").unlink()  # as if stopped half-way
    err = one_line_error(capsys, [*args, "--cfg", "2"])
    assert "these samples were drawn with sampling" in err
    model, config = load_generator(gen)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save_generator(model, gen, preset=config["preset"], tokenizer=config["tokenizer"], train_steps=99,
                   extra={k: config[k] for k in ("classes", "layout", "resolution")})
    err = one_line_error(capsys, args)
    assert f"{tmp_path / 's' / 'manifest.json'}: these samples were drawn by generator weights" in err
    assert not (tmp_path / "s" / "000001.png").exists()  # nothing drawn from the new weights


# -- item 5: arguments and files ------------------------------------------------------------------------
@pytest.mark.parametrize("flag, value, expected", [
    ("--cfg", "nan", "the guidance scale must be a finite number >= 1 (1 = no guidance), got nan"),
    ("--cfg", "inf", "the guidance scale must be a finite number >= 1"),
    ("--top-p", "2", "top_p must be in (0, 1] (1 = off), got 2.0"),
    ("--top-p", "0", "top_p must be in (0, 1] (1 = off), got 0.0"),
    ("--temperature", "nan", "temperature must be a finite number > 0, got nan"),
])
def test_sampling_arguments_out_of_range_are_refused(flag, value, expected, tmp_path, capsys):
    err = one_line_error(capsys, ["gen", "sample", "--generator", str(tmp_path), "--out", str(tmp_path / "s"),
                                  flag, value])
    assert expected in err
    assert not (tmp_path / "s").exists()


def broken_copy(source: Path, dest: Path) -> Path:
    dest.mkdir()
    for f in source.iterdir():
        if f.is_file():
            (dest / f.name).write_bytes(f.read_bytes())
    return dest


def test_damaged_token_datasets_are_named(token_sets, tmp_path):
    a = token_sets[0]
    meta = json.loads((a / "meta.json").read_text())
    vocab = meta["layout"]["vocab_size"]
    oov = broken_copy(a, tmp_path / "oov")
    ids = np.load(a / TOKENS_NAME)
    ids[1, 3] = vocab
    np.save(oov / TOKENS_NAME, ids)
    with pytest.raises(ValueError, match=rf"{oov / TOKENS_NAME}: token ids span \[\d+, {vocab}\], outside the "
                                         rf"vocabulary \[0, {vocab}\) of its layout in meta.json"):
        TokenDataset(oov)
    typed = broken_copy(a, tmp_path / "typed")
    (typed / "meta.json").write_text(json.dumps({**meta, "layout": "grid"}))
    with pytest.raises(ValueError, match=rf"{typed / 'meta.json'}: the layout, .* missing or of the wrong type"):
        TokenDataset(typed)
    for name, damage in [("truncated", lambda b: b[: len(b) // 2]), ("garbage", lambda b: b"\x93NUMPY" + b"\0" * 40)]:
        folder = broken_copy(a, tmp_path / name)
        (folder / TOKENS_NAME).write_bytes(damage((a / TOKENS_NAME).read_bytes()))
        with pytest.raises(ValueError, match=rf"{folder / TOKENS_NAME}: not a readable .npy array"):
            TokenDataset(folder)


def test_a_corrupt_png_found_on_sample_resume_is_named(run_a, tmp_path, capsys):
    args = ["gen", "sample", "--generator", str(run_a / "generator"), "--out", str(tmp_path / "s"), "--num", "2"]
    assert main(args) == 0
    (tmp_path / "s" / "000000.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    err = one_line_error(capsys, args)
    assert f"{tmp_path / 's' / '000000.png'}: " in err and "delete it and rerun the same command" in err


class Planted:
    def __reduce__(self):
        return (print, ("planted code ran",))


def test_a_planted_last_ckpt_is_refused_in_one_line(token_sets, tmp_path, capsys):
    (tmp_path / "checkpoints").mkdir()
    torch.save({"state_dict": {}, "x": Planted()}, tmp_path / "checkpoints" / "last.ckpt")
    err = one_line_error(capsys, fit_args(token_sets[0], tmp_path, "--resume"))
    assert f"{tmp_path / 'checkpoints' / 'last.ckpt'}: cannot be read as a weights-only PyTorch file" in err
    assert "planted code ran" not in capsys.readouterr().out


def test_configs_too_large_for_memory_are_refused_before_allocating(run_a, tmp_path, monkeypatch):
    import tokbench
    from tokbench.checkpoint import CheckpointError

    tokbench.create("vq:size=tiny").save_pretrained(str(tmp_path / "tok"))
    config = json.loads((tmp_path / "tok" / "config.json").read_text())
    config["config"]["ch"] = 200_000
    (tmp_path / "tok" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config.json: the config describes a model of [\d,]+ parameters "
                                              r"\([\d,.]+ GiB\), more than the [\d,.]+ GiB of memory available"):
        tokbench.load(str(tmp_path / "tok"))
    # the generator's config.json too; here the limit is lowered instead of the sizes raised
    monkeypatch.setattr("tokbench.checkpoint.available_memory_bytes", lambda: 1000)
    with pytest.raises(CheckpointError, match="generator/config.json: the config describes a model of"):
        load_generator(run_a / "generator")
