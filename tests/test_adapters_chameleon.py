"""Chameleon's (and Anole's) VQGAN, ``tokenizer/vqgan.ckpt`` + ``tokenizer/vqgan.yaml``, against Chameleon's code.

The fixture (``tests/fixtures/make_chameleon_vqgan_fixture.py``) was computed by Chameleon's own
``ImageTokenizer`` and ``VQModel`` (``chameleon/inference/{image_tokenizer,vqgan}.py``) from random
weights saved as the release's two files. Parity: ids 100% equal, reconstructions within 1e-4,
end to end and decoding Chameleon's own ids.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import tokbench
from tokbench import CheckpointError, Tokens
from tokbench.cli import main

FOLDER = Path(__file__).parent / "fixtures" / "chameleon_vqgan"
WEIGHTS = FOLDER / "vqgan.ckpt"
EXPECTED = np.load(FOLDER / "expected.npz")
X = torch.from_numpy(EXPECTED["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255
TOL = 1e-4


def _assert_parity(tokenizer) -> None:
    tokens = tokenizer.encode(X)
    assert tokens.ids.shape == EXPECTED["indices"].shape == (2, 12, 12)
    assert (tokens.ids.numpy() == EXPECTED["indices"]).mean() >= 0.999
    assert np.abs(tokenizer.decode(tokens).numpy() - EXPECTED["recon"]).max() <= TOL


def _copy(tmp_path: Path, with_yaml: bool = True) -> Path:
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    shutil.copy(WEIGHTS, folder / "vqgan.ckpt")
    if with_yaml:
        shutil.copy(FOLDER / "vqgan.yaml", folder / "vqgan.yaml")
    return folder / "vqgan.ckpt"


def test_parity_with_the_upstream_code():
    tokenizer = tokbench.load("chameleon-vqgan", weights=str(WEIGHTS))
    _assert_parity(tokenizer)
    stored = Tokens(tokenizer.layout_for(48, 48), (48, 48), ids=torch.from_numpy(EXPECTED["indices"]))
    assert np.abs(tokenizer.decode(stored).numpy() - EXPECTED["recon"]).max() <= TOL


def test_the_yaml_beside_the_ckpt_sets_the_architecture(tmp_path):
    """Attention resolutions live only in the yaml: one the weights lack is a one-line missing-key error."""
    weights = _copy(tmp_path)
    blob = yaml.safe_load((FOLDER / "vqgan.yaml").read_text())
    assert blob["model"]["params"]["ddconfig"]["attn_resolutions"] == []  # as released
    blob["model"]["params"]["ddconfig"]["attn_resolutions"] = [12]  # attention at the lowest level (48 / 4)
    weights.with_suffix(".yaml").write_text(yaml.safe_dump(blob))
    # one attention block in the encoder's level 2, two in the decoder's: 10 tensors each
    with pytest.raises(CheckpointError, match=r"missing keys \[decoder\.up\.2\.attn\.0\..*\(30 in all\)") as err:
        tokbench.load("chameleon-vqgan", weights=str(weights))
    assert "\n" not in str(err.value)


def test_without_the_yaml_the_sizes_come_from_the_tensors(tmp_path):
    tokenizer = tokbench.load("chameleon-vqgan", weights=str(_copy(tmp_path, with_yaml=False)))
    assert (tokenizer.config["codebook_size"], tokenizer.config["code_dim"], tokenizer.config["attn_levels"]) == (512, 32, [])
    _assert_parity(tokenizer)


def test_a_broken_yaml_is_one_line(tmp_path):
    weights = _copy(tmp_path)
    weights.with_suffix(".yaml").write_text("model: {params: 3}\n")
    with pytest.raises(CheckpointError, match="not a taming model.yaml with model.params.ddconfig") as err:
        tokbench.load("chameleon-vqgan", weights=str(weights))
    assert "\n" not in str(err.value)


def test_convert_then_load_gives_the_same_ids(tmp_path):
    assert main(["convert", "chameleon-vqgan", "--weights", str(WEIGHTS), str(tmp_path / "ckpt")]) == 0
    assert np.array_equal(tokbench.load(tmp_path / "ckpt").encode(X).ids.numpy(), EXPECTED["indices"])
