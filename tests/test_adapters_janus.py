"""Janus-Pro's generation VQ (``gen_vision_model.*`` inside the LLM's shards) against Janus's own code.

The fixture (``tests/fixtures/make_janus_vq_fixture.py``) is a small ``VQModel`` built by Janus's
``janus/models/vq_model.py`` with random weights, stored as the Janus-Pro-7B release stores it: bfloat16
tensors under ``gen_vision_model.``, split over two ``pytorch_model-*.bin`` shards with
``pytorch_model.bin.index.json``, beside stand-ins for the LLM's other sub-models. Parity: ids 100%
equal, reconstructions within 1e-4, end to end and decoding Janus's own ids.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import tokbench
from tokbench import CheckpointError, Tokens
from tokbench.cli import main

FOLDER = Path(__file__).parent / "fixtures" / "janus_vq"
EXPECTED = np.load(FOLDER / "expected.npz")
X = torch.from_numpy(EXPECTED["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255
TOL = 1e-4


def _assert_parity(tokenizer) -> None:
    tokens = tokenizer.encode(X)
    assert tokens.ids.shape == EXPECTED["indices"].shape == (2, 24, 24)
    assert (tokens.ids.numpy() == EXPECTED["indices"]).mean() >= 0.999
    assert np.abs(tokenizer.decode(tokens).numpy() - EXPECTED["recon"]).max() <= TOL


def test_parity_with_the_upstream_code():
    tokenizer = tokbench.load("janus-pro-vq", weights=str(FOLDER))
    _assert_parity(tokenizer)
    stored = Tokens(tokenizer.layout_for(48, 48), (48, 48), ids=torch.from_numpy(EXPECTED["indices"]))
    assert np.abs(tokenizer.decode(stored).numpy() - EXPECTED["recon"]).max() <= TOL


def test_the_sizes_come_from_the_tensors_and_the_weights_are_upcast():
    tokenizer = tokbench.load("janus-pro-vq", weights=str(FOLDER))
    cfg = tokenizer.config
    assert (cfg["ch"], tuple(cfg["ch_mult"]), cfg["num_res_blocks"], cfg["z_channels"]) == (32, (1, 2), 1, 32)
    assert (cfg["codebook_size"], cfg["code_dim"], cfg["l2_normalize"]) == (1024, 8, True)
    assert all(p.dtype == torch.float32 for p in tokenizer.parameters())
    shard = torch.load(FOLDER / "pytorch_model-00002-of-00002.bin", map_location="cpu", weights_only=True)
    codes = shard["gen_vision_model.quantize.embedding.weight"]
    assert codes.dtype == torch.bfloat16
    assert torch.equal(tokenizer.quantize.embedding.float(), codes.float())


def test_the_l2_normalisation_decides_the_ids():
    """The fixture's codes have unequal norms: nearest codes without the normalisation differ."""
    tokenizer = tokbench.load("janus-pro-vq", weights=str(FOLDER))
    z_ND = tokenizer.features(X).permute(0, 2, 3, 1).reshape(-1, 8)
    raw = torch.cdist(z_ND, tokenizer.quantize.embedding.float()).argmin(1).numpy()
    assert (raw == EXPECTED["indices"].reshape(-1)).mean() < 0.9


def test_safetensors_shards_with_their_index(tmp_path):
    """The same tensors as ``model-*.safetensors`` shards listed by ``model.safetensors.index.json``."""
    index = json.loads((FOLDER / "pytorch_model.bin.index.json").read_text())
    weight_map = {}
    for shard in sorted(set(index["weight_map"].values())):
        state = torch.load(FOLDER / shard, map_location="cpu", weights_only=True)
        name = shard.replace("pytorch_model", "model").replace(".bin", ".safetensors")
        save_file(state, str(tmp_path / name))
        weight_map.update(dict.fromkeys(state, name))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    _assert_parity(tokbench.load("janus-pro-vq", weights=str(tmp_path)))


def test_a_listed_shard_that_is_missing_is_one_line(tmp_path):
    folder = tmp_path / "Janus-Pro-7B"
    shutil.copytree(FOLDER, folder)
    (folder / "pytorch_model-00001-of-00002.bin").unlink()
    with pytest.raises(CheckpointError, match="pytorch_model-00001-of-00002.bin: listed by the index but missing") as err:
        tokbench.load("janus-pro-vq", weights=str(folder))
    assert "\n" not in str(err.value)


def test_convert_then_load_gives_the_same_ids(tmp_path):
    assert main(["convert", "janus-pro-vq", "--weights", str(FOLDER), str(tmp_path / "ckpt")]) == 0
    assert np.array_equal(tokbench.load(tmp_path / "ckpt").encode(X).ids.numpy(), EXPECTED["indices"])


def test_janus_1_3b_single_safetensors_file(tmp_path):
    """Janus-1.3B (HF deepseek-ai/Janus-1.3B) ships one ``model.safetensors`` and no index: the same
    tensors in that container load as ``janus-pro-vq``, from the folder or the file itself."""
    index = json.loads((FOLDER / "pytorch_model.bin.index.json").read_text())
    state = {}
    for shard in sorted(set(index["weight_map"].values())):
        state.update(torch.load(FOLDER / shard, map_location="cpu", weights_only=True))
    assert any(not k.startswith("gen_vision_model.") for k in state)  # the LLM's stand-ins come along
    folder = tmp_path / "Janus-1.3B"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    _assert_parity(tokbench.load("janus-pro-vq", weights=str(folder)))
    _assert_parity(tokbench.load("janus-pro-vq", weights=str(folder / "model.safetensors")))
