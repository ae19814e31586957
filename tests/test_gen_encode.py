"""`tokbench gen encode`: streamed, sharded, resumable token datasets (tokbench.generation.token_data)."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tokbench
from tokbench.cli import main as cli_main
from tokbench.generation.sequence import to_sequence
from tokbench.generation.token_data import TokenDataset, split_rows, token_dtype, tokens_to_rows
from tokbench.generation.token_encoding import encode_dataset
from tokbench.imageio import read_image, resize_center_crop, uint8_to_tensor
from tokbench.tasks.data import prepare
from tokbench.tokens import TokenLayout, Tokens

RES = 32


@pytest.fixture(autouse=True, scope="module")
def one_thread_no_kernel_build():
    """One intra-op thread (on the shared 2-core machine OpenMP threads spinning against other jobs
    made the tiny convolutions ~10x slower), and the chunked nearest-codeword path in this process and
    in the torchrun ranks alike: the fused CPU kernel's JIT build (a minute, whenever another checkout
    rebuilt the shared cache) is tested in test_cpu_kernel.py and gives the same ids."""
    before, env_before = torch.get_num_threads(), os.environ.get("TOKBENCH_DISABLE_CPU_EXT")
    torch.set_num_threads(1)
    os.environ["TOKBENCH_DISABLE_CPU_EXT"] = "1"
    yield
    torch.set_num_threads(before)
    if env_before is None:
        os.environ.pop("TOKBENCH_DISABLE_CPU_EXT")
    else:
        os.environ["TOKBENCH_DISABLE_CPU_EXT"] = env_before


def _write_images(folder: Path, names: list[str], seed: int = 0) -> None:
    """Smooth random images of varied, non-square sizes (so the crop matters)."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(names):
        h, w = 36 + 5 * (k % 4), 48 - 3 * (k % 3)
        coarse = rng.integers(0, 256, (h // 6 + 1, w // 6 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)


@pytest.fixture(scope="module")
def classes_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("classes")
    _write_images(root, [f"{c}/{i}.png" for c in ("zebra", "ant", "mole") for i in range(3)])
    return root


@pytest.fixture(scope="module")
def flat_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flat")
    _write_images(root, [f"img{i:02d}.png" for i in range(5)], seed=1)
    return root


def _crops(root: Path, files: list[str]) -> torch.Tensor:
    return torch.stack([resize_center_crop(uint8_to_tensor(read_image(root / f)), RES) for f in files])


def _arrays(out: Path) -> tuple[np.ndarray, np.ndarray]:
    return np.load(out / "tokens.npy"), np.load(out / "labels.npy")


@pytest.mark.parametrize("spec", ["vq:size=tiny", "residual_scale:size=tiny", "holistic_1d:size=tiny"])
def test_streamed_ids_equal_in_memory_encoding_with_flips(classes_dir, tmp_path, spec):
    out = tmp_path / "tok"
    summary = encode_dataset(spec, classes_dir, out, resolution=RES, flip=True, batch_size=4, progress=False)
    ds = TokenDataset(out)
    files = ds.files
    assert files == sorted(p.relative_to(classes_dir).as_posix() for p in classes_dir.rglob("*.png"))
    assert summary.num_images == 9 and len(ds) == 18 and summary.complete
    tok = tokbench.load(spec)
    x_B3RR = _crops(classes_dir, files)
    ids_BL = to_sequence(tok.encode(x_B3RR)).numpy()
    flipped_BL = to_sequence(tok.encode(x_B3RR.flip(-1))).numpy()
    tokens, _ = _arrays(out)
    assert tokens.dtype == np.int16 and tokens.shape == (18, tok.layout_for(RES, RES).num_tokens)
    np.testing.assert_array_equal(tokens[0::2], ids_BL)
    np.testing.assert_array_equal(tokens[1::2], flipped_BL)
    assert not np.array_equal(tokens[0::2], tokens[1::2])  # the flip changed the tokens
    row, label = ds[3]
    assert row.dtype == torch.int64 and torch.equal(row, torch.from_numpy(flipped_BL[1]).long())
    assert ds.layout == tok.layout_for(RES, RES) and ds.meta["token_shape"] == [ids_BL.shape[1]]


def test_large_vocabularies_are_stored_as_int32():
    big = TokenLayout("grid", (2, 2), vocab_size=40_000)
    assert token_dtype(big) == "int32" and token_dtype(TokenLayout("grid", (2, 2), vocab_size=32_767)) == "int16"
    ids = torch.tensor([[[0, 32_768], [39_999, 7]]])
    rows = tokens_to_rows(Tokens(big, (16, 16), ids=ids), token_dtype(big))
    assert rows.dtype == np.int32 and rows.tolist() == [[0, 32_768, 39_999, 7]]


def test_crop_is_the_eval_resolution_policy(classes_dir):
    image = read_image(classes_dir / "ant/0.png")
    assert image.shape[0] != image.shape[1]
    torch.testing.assert_close(resize_center_crop(uint8_to_tensor(image), RES), prepare(image, str(RES)).x_3HW,
                               rtol=0, atol=0)


def test_continuous_latents_stored_as_float16_raster_rows(flat_dir, tmp_path):
    out = tmp_path / "vae"
    encode_dataset("vae:size=tiny", flat_dir, out, resolution=RES, batch_size=2, progress=False)
    ds = TokenDataset(out)
    tok = tokbench.load("vae:size=tiny")
    latents_BChw = tok.encode(_crops(flat_dir, ds.files)).latents
    B, C, h, w = latents_BChw.shape
    tokens, labels = _arrays(out)
    assert tokens.dtype == np.float16 and tokens.shape == (B, h * w, C)
    assert ds.meta["token_dtype"] == "float16" and ds.meta["token_shape"] == [h * w, C]
    expected_BLC = latents_BChw.permute(0, 2, 3, 1).reshape(B, h * w, C)
    row, label = ds[2]
    assert row.dtype == torch.float32 and row.shape == (h * w, C) and label == -1
    torch.testing.assert_close(torch.from_numpy(tokens.astype(np.float32)), expected_BLC, rtol=1e-3, atol=1e-3)
    # element (token (0, 1), channel 2) lands where raster order puts it
    assert tokens[0, 1, 2] == np.float16(latents_BChw[0, 2, 0, 1].item())
    assert ds.num_classes == 0 and labels.tolist() == [-1] * B


def test_labels_from_subfolders_csv_or_none(classes_dir, flat_dir, tmp_path):
    out = tmp_path / "folders"
    encode_dataset("vq:size=tiny", classes_dir, out, resolution=RES, flip=True, batch_size=8, progress=False)
    ds = TokenDataset(out)
    assert ds.meta["labels_source"] == "folders" and ds.classes == ["ant", "mole", "zebra"] and ds.num_classes == 3
    expected = [["ant", "mole", "zebra"].index(f.split("/")[0]) for f in ds.files]
    assert ds.labels.tolist() == [c for c in expected for _ in range(2)]  # both flips carry the label
    assert [ds[i][1] for i in range(len(ds))] == ds.labels.tolist()

    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("file,label\n" + "".join(f"{f},{'odd' if i % 2 else 'even'}\n"
                                                 for i, f in enumerate(sorted(os.listdir(flat_dir)))))
    out = tmp_path / "csv"
    encode_dataset("vq:size=tiny", flat_dir, out, resolution=RES, labels=csv_path, progress=False)
    ds = TokenDataset(out)
    assert ds.meta["labels_source"] == "csv" and ds.classes == ["even", "odd"]
    assert ds.labels.tolist() == [0, 1, 0, 1, 0]

    out = tmp_path / "none"
    encode_dataset("vq:size=tiny", flat_dir, out, resolution=RES, progress=False)
    ds = TokenDataset(out)
    assert ds.meta["labels_source"] == "none" and ds.meta["classes"] is None and ds.num_classes == 0
    assert ds.labels.tolist() == [-1] * 5


def test_integer_csv_labels_keep_their_values(flat_dir, tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("file,label\n" + "".join(f"./{f},{[3, 0, 3, 1, 0][i]}\n"
                                                 for i, f in enumerate(sorted(os.listdir(flat_dir)))))
    out = tmp_path / "tok"
    encode_dataset("vq:size=tiny", flat_dir, out, resolution=RES, labels=csv_path, progress=False)
    ds = TokenDataset(out)
    assert ds.labels.tolist() == [3, 0, 3, 1, 0] and ds.classes == ["0", "1", "2", "3"]


class Interrupt(Exception):
    pass


def _stop_after(k: int):
    def hook(n: int) -> None:
        if n == k:
            raise Interrupt
    return hook


def test_interrupted_run_resumes_to_the_uninterrupted_files(classes_dir, tmp_path):
    whole = tmp_path / "whole"
    encode_dataset("vq:size=tiny", classes_dir, whole, resolution=RES, flip=True, batch_size=2, progress=False)

    out = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        encode_dataset("vq:size=tiny", classes_dir, out, resolution=RES, flip=True, batch_size=2, progress=False,
                       on_batch=_stop_after(2))
    assert json.loads((out / "meta.json").read_text())["complete"] is False
    with pytest.raises(ValueError, match="incomplete"):
        TokenDataset(out)
    # resumed with another batch size: only the 5 missing images are encoded
    summary = encode_dataset("vq:size=tiny", classes_dir, out, resolution=RES, flip=True, batch_size=3,
                             progress=False)
    assert (summary.already_done, summary.encoded_images, summary.complete) == (4, 5, True)
    for a, b in zip(_arrays(whole), _arrays(out)):
        np.testing.assert_array_equal(a, b)
    assert json.loads((out / "meta.json").read_text()) == json.loads((whole / "meta.json").read_text())
    assert not (out / "progress").exists()


def test_complete_dataset_rerun_is_a_noop(flat_dir, tmp_path):
    out = tmp_path / "tok"
    encode_dataset("vq:size=tiny", flat_dir, out, resolution=RES, progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    summary = encode_dataset("vq:size=tiny", flat_dir, out, resolution=RES, batch_size=1, progress=False)
    assert summary.encoded_images == 0 and summary.complete
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def test_other_settings_against_an_existing_dataset_are_refused(classes_dir, flat_dir, tmp_path):
    out = tmp_path / "tok"
    with pytest.raises(Interrupt):  # also refused while still incomplete
        encode_dataset("vq:size=tiny", flat_dir, out, resolution=RES, batch_size=2, progress=False,
                       on_batch=_stop_after(1))
    tokens_before = np.load(out / "tokens.npy").copy()
    for kwargs, message in [({"resolution": 64}, "--resolution = 32; this run asks for 64"),
                            ({"flip": True}, "--flip = False"),
                            ({"tokenizer": "holistic_1d:size=tiny"}, "tokenizer 'vq:size=tiny'"),
                            ({"data": classes_dir}, "labels from = 'none'")]:
        args = {"tokenizer": "vq:size=tiny", "data": flat_dir, "resolution": RES, **kwargs}
        with pytest.raises(ValueError, match=message):
            encode_dataset(args.pop("tokenizer"), args.pop("data"), out, progress=False, **args)
    np.testing.assert_array_equal(np.load(out / "tokens.npy"), tokens_before)  # nothing was touched

    extra = tmp_path / "more"
    _write_images(extra, [f"img{i:02d}.png" for i in range(6)], seed=1)
    with pytest.raises(ValueError, match="from 5 images, the data folder now lists 6"):
        encode_dataset("vq:size=tiny", extra, out, resolution=RES, progress=False)


def _torchrun_encode(data: Path, out: Path) -> str:
    """``tokbench gen encode`` on 2 CPU ranks (Gloo) under torchrun; its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tokbench", "gen", "encode", "--tokenizer", "vq:size=tiny", "--data", str(data),
           "--out", str(out), "--resolution", str(RES), "--flip", "--batch-size", "2", "--workers", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:  # never leave the ranks running
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    assert stdout.count("wrote") == 1  # rank 0 reports
    return stdout


def test_two_ranks_write_the_same_dataset_as_one_and_resume_a_one_rank_run(classes_dir, tmp_path):
    one = tmp_path / "one"
    encode_dataset("vq:size=tiny", classes_dir, one, resolution=RES, flip=True, batch_size=2, progress=False)
    two = tmp_path / "two"
    _torchrun_encode(classes_dir, two)
    for a, b in zip(_arrays(one), _arrays(two)):
        np.testing.assert_array_equal(a, b)
    assert json.loads((two / "meta.json").read_text()) == json.loads((one / "meta.json").read_text())

    resumed = tmp_path / "resumed"  # 3 of 9 images on one rank, the other 6 shared by two
    with pytest.raises(Interrupt):
        encode_dataset("vq:size=tiny", classes_dir, resumed, resolution=RES, flip=True, batch_size=3,
                       progress=False, on_batch=_stop_after(1))
    assert "3 found done by an earlier run" in _torchrun_encode(classes_dir, resumed)
    for a, b in zip(_arrays(one), _arrays(resumed)):
        np.testing.assert_array_equal(a, b)


def _cli_error(capsys, *argv: str) -> str:
    assert cli_main(["gen", "encode", *argv]) == 1
    return capsys.readouterr().err


def test_bad_inputs_give_clear_errors(flat_dir, tmp_path, capsys):
    base = ["--tokenizer", "vq:size=tiny", "--resolution", str(RES), "--workers", "0"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    assert "contains no image files" in _cli_error(capsys, *base, "--data", str(empty), "--out", str(tmp_path / "a"))
    assert "no such folder" in _cli_error(capsys, *base, "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "a"))

    err = _cli_error(capsys, "--tokenizer", "jpeg", "--data", str(flat_dir), "--out", str(tmp_path / "b"))
    assert "codec tokenizers" in err and "bytes" in err
    assert not (tmp_path / "b").exists()

    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("file,label\nimg00.png,cat\nghost.png,dog\n")
    err = _cli_error(capsys, *base, "--data", str(flat_dir), "--out", str(tmp_path / "c"), "--labels", str(csv_path))
    assert "names 1 file(s) that are not images" in err and "ghost.png" in err
    csv_path.write_text("file,label\nimg00.png,cat\n")
    err = _cli_error(capsys, *base, "--data", str(flat_dir), "--out", str(tmp_path / "c"), "--labels", str(csv_path))
    assert "4 image(s)" in err and "have no label row" in err
    csv_path.write_text("path,class\nimg00.png,cat\n")
    assert "columns 'file' and 'label'" in _cli_error(capsys, *base, "--data", str(flat_dir), "--out",
                                                      str(tmp_path / "c"), "--labels", str(csv_path))

    mixed = tmp_path / "mixed"
    _write_images(mixed, ["loose.png", "cls/a.png"])
    assert "lie directly in the folder" in _cli_error(capsys, *base, "--data", str(mixed), "--out", str(tmp_path / "d"))

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "thesis.tex").write_text("precious")
    assert "not empty and holds no token dataset" in _cli_error(capsys, *base, "--data", str(flat_dir), "--out",
                                                                str(occupied))
    assert (occupied / "thesis.tex").read_text() == "precious"

    broken = tmp_path / "broken"
    _write_images(broken, ["a.png", "b.png"])
    (broken / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    err = _cli_error(capsys, *base, "--data", str(broken), "--out", str(tmp_path / "e"), "--batch-size", "1")
    assert "b.png" in err and "fix or replace this file" in err
    with pytest.raises(ValueError, match="not a token dataset"):
        TokenDataset(tmp_path)
    (tmp_path / "meta.json").write_text('{"format": "something-else", "version": 1}')
    with pytest.raises(ValueError, match="expected 'tokbench-token-dataset'"):
        TokenDataset(tmp_path)
    err = _cli_error(capsys, *base, "--data", str(flat_dir), "--out", str(tmp_path))  # never written over
    assert "format 'something-else', expected 'tokbench-token-dataset'" in err
    assert json.loads((tmp_path / "meta.json").read_text())["format"] == "something-else"


def test_split_by_image_and_pickling_for_loader_workers(classes_dir, tmp_path):
    out = tmp_path / "tok"
    encode_dataset("vq:size=tiny", classes_dir, out, resolution=RES, flip=True, progress=False)
    ds = TokenDataset(out)
    train, held = ds.split(4)
    assert held == [6, 7, 14, 15]  # images 3 and 7, each with its flip
    assert sorted(train + held) == list(range(len(ds))) and {ds.image_of_row(r) for r in held} == {3, 7}
    assert split_rows(3, 1, 4) == ([0, 1], [2])  # fewer images than k: the last one is held out
    with pytest.raises(ValueError, match="held_out_every must be >= 2"):
        ds.split(1)
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000  # the memmap is not pickled, only the metadata
    clone = pickle.loads(blob)
    assert all(torch.equal(clone[i][0], ds[i][0]) for i in range(len(ds)))
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=1)
    ids_BL = torch.cat([b[0] for b in loader])
    assert ids_BL.shape == (18, ds.layout.num_tokens) and torch.equal(ids_BL[4], ds[4][0])
    assert ds.tokenizer_spec == "vq:size=tiny" and ds.load_tokenizer().family == "vq"


def test_gen_help_lists_encode(capsys):
    with pytest.raises(SystemExit):
        cli_main(["gen", "encode", "--help"])
    assert "--flip" in capsys.readouterr().out
