"""Public names that reuse an existing loader: LlamaGen's t2i VQ-16 and Janus-Pro's generation VQ.

Both are LlamaGen's VQ-16 architecture (Janus's ``vq_model.py`` has LlamaGen's modules, checked
against the upstream sources), so the shared LlamaGen fixture's weights and upstream outputs
serve as the reference; for Janus the tensors are put inside an LLM-style checkpoint folder
under ``gen_vision_model.``, among tensors of other sub-models that must be ignored.
"""
from __future__ import annotations

import json
import re
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import tokbench
from tokbench import CheckpointError

FIXTURES = Path(os.environ.get("TOKBENCH_ADAPTER_FIXTURES",
                               Path(__file__).resolve().parents[1].parent / "shared" / "adapter-fixtures"))
LLAMAGEN = FIXTURES / "llamagen-vq16"
pytestmark = pytest.mark.skipif(not LLAMAGEN.is_dir(), reason=f"adapter fixture not found at {LLAMAGEN}")


def _expected(array: str) -> np.ndarray:
    return np.load(LLAMAGEN / "expected" / f"{array}.npy")


def _assert_parity(tokenizer) -> None:
    x = torch.from_numpy(_expected("inputs"))
    tokens = tokenizer.encode(x)
    ids_up = _expected("indices")
    assert np.array_equal(tokens.ids.numpy().reshape(ids_up.shape), ids_up)
    assert np.abs(tokenizer.decode(tokens).numpy() - _expected("recon")).max() <= 1e-4


def _llamagen_state() -> dict[str, torch.Tensor]:
    return torch.load(LLAMAGEN / "checkpoint/vq_ds16_c2i.pt", map_location="cpu", weights_only=True)["model"]


def _distractors(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"language_model.model.embed_tokens.weight": torch.randn(10, 4, generator=g),
            "vision_model.vision_tower.pos_embed": torch.randn(1, 5, 4, generator=g),
            "gen_head.output_mlp_projector.weight": torch.randn(4, 4, generator=g)}


def test_llamagen_t2i_reads_the_vq16_container():
    _assert_parity(tokbench.load("llamagen-vq16-t2i", weights=str(LLAMAGEN / "checkpoint/vq_ds16_c2i.pt")))


def test_janus_reads_only_the_shards_holding_the_vq(tmp_path):
    vq = {f"gen_vision_model.{k}": v for k, v in _llamagen_state().items()}
    (tmp_path / "pytorch_model-00001-of-00002.bin").write_bytes(b"not read: holds only the LLM")
    torch.save({**vq, **_distractors(1)}, tmp_path / "pytorch_model-00002-of-00002.bin")
    weight_map = {k: "pytorch_model-00001-of-00002.bin" for k in ("language_model.lm_head.weight",)}
    weight_map.update({k: "pytorch_model-00002-of-00002.bin" for k in [*vq, *_distractors(1)]})
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    _assert_parity(tokbench.load("janus-pro-vq", weights=str(tmp_path)))


def test_janus_single_safetensors_file(tmp_path):
    vq = {f"gen_vision_model.{k}": v.contiguous() for k, v in _llamagen_state().items()}
    save_file({**vq, **_distractors(2)}, str(tmp_path / "model.safetensors"))
    _assert_parity(tokbench.load("janus-pro-vq", weights=str(tmp_path)))


def test_a_checkpoint_without_the_vq_is_one_line(tmp_path):
    save_file(_distractors(3), str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=re.escape("no gen_vision_model.* tensors")) as err:
        tokbench.load("janus-pro-vq", weights=str(tmp_path))
    assert "\n" not in str(err.value)


TAMING = FIXTURES / "taming-vqgan-f16-256"


def test_chameleon_reads_taming_in_its_own_layout(tmp_path):
    """Chameleon/Anole ship taming's VQGAN as tokenizer/vqgan.ckpt + tokenizer/vqgan.yaml."""
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    (folder / "vqgan.ckpt").symlink_to(TAMING / "checkpoint/ckpts/last.ckpt")
    (folder / "vqgan.yaml").write_text((TAMING / "checkpoint/configs/model.yaml").read_text())
    tokenizer = tokbench.load("chameleon-vqgan", weights=str(folder / "vqgan.ckpt"))
    assert tokenizer.config["codebook_size"] == 256  # the fixture's yaml, not the release's 8,192
    x = torch.from_numpy(np.load(TAMING / "expected/inputs.npy"))
    tokens = tokenizer.encode(x)
    ids_up = np.load(TAMING / "expected/indices.npy")
    assert np.array_equal(tokens.ids.numpy().reshape(ids_up.shape), ids_up)
    assert np.abs(tokenizer.decode(tokens).numpy() - np.load(TAMING / "expected/recon.npy")).max() <= 1e-4
