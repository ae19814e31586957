"""latent-diffusion's VQ first stages (``ldm-vq-f4``, ``ldm-vq-f8``) loaded from their released files.

Parity with LDM's own ``Encoder``/``Decoder`` and taming's ``VectorQuantizer2`` on a small fixture they
computed (``tests/fixtures/make_ldm_vq_fixture.py``: random weights, vq-f8's shape at reduced width,
``model.ckpt`` in pytorch-lightning 1.4's container beside ``config.yaml``): ids 100% equal,
reconstructions within 1e-4, end to end and decoding the upstream ids.
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
from tokbench.tokenizers.public import taming, vqmodel

FIXTURE = Path(__file__).parent / "fixtures" / "ldm_vq"
WEIGHTS = FIXTURE / "model.ckpt"
EXPECTED = np.load(FIXTURE / "expected.npz")
X = torch.from_numpy(EXPECTED["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255
TOL = 1e-4


@pytest.mark.parametrize("name", ["ldm-vq-f8", "ldm-vq-f4"])
def test_parity_with_the_upstream_code(name):
    """Either name reads the sizes from config.yaml, so both give upstream's outputs."""
    tokenizer = tokbench.load(name, weights=str(WEIGHTS))
    tokens = tokenizer.encode(X)
    assert tokens.ids.shape == EXPECTED["indices"].shape == (2, 8, 8)
    assert (tokens.ids.numpy() == EXPECTED["indices"]).mean() >= 0.999
    assert np.abs(tokenizer.decode(tokens).numpy() - EXPECTED["recon"]).max() <= TOL
    stored = Tokens(tokens.layout, tokens.image_size, ids=torch.from_numpy(EXPECTED["indices"]))
    assert np.abs(tokenizer.decode(stored).numpy() - EXPECTED["recon_from_ids"]).max() <= TOL


def test_sizes_read_off_the_tensors_without_config_yaml(tmp_path):
    shutil.copy(WEIGHTS, tmp_path / "model.ckpt")
    tokenizer = tokbench.load("ldm-vq-f8", weights=str(tmp_path / "model.ckpt"))
    assert tokenizer.config["attn_levels"] == [3] and tokenizer.quantize.codebook_size == 256
    assert np.array_equal(tokenizer.encode(X).ids.numpy(), EXPECTED["indices"])


def test_the_file_is_recognised_as_ldm_vq_f8_not_taming():
    assert tokbench.load(WEIGHTS).upstream["name"] == "ldm-vq-f8"
    assert not vqmodel.build_f4.recognizes(WEIGHTS)
    assert not taming.build_f16_16384.recognizes(WEIGHTS) and not taming.build_f16_1024.recognizes(WEIGHTS)


def test_attention_free_middle_blocks_are_refused_in_one_line(tmp_path):
    shutil.copy(WEIGHTS, tmp_path / "model.ckpt")
    config = yaml.safe_load((FIXTURE / "config.yaml").read_text())
    config["model"]["params"]["ddconfig"]["attn_type"] = "none"  # vq-f4-noattn's config
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(CheckpointError, match="attn_type='none' is not supported") as err:
        tokbench.load("ldm-vq-f4", weights=str(tmp_path / "model.ckpt"))
    assert "\n" not in str(err.value)


def test_an_override_the_weights_fix_is_refused():
    with pytest.raises(ValueError, match="codebook_size=8192 cannot be changed: the weights .* fix codebook_size=256"):
        tokbench.load("ldm-vq-f4", weights=str(WEIGHTS), codebook_size=8192)
