"""latent-diffusion's VQ first stages (``ldm-vq-f4``, ``ldm-vq-f8``) and the diffusers VQModels of aMUSEd
(``amused-vqgan``) and Kandinsky 2.x (``kandinsky-movq``) loaded from their released files.

Parity with LDM's own ``Encoder``/``Decoder`` and taming's ``VectorQuantizer2`` on a small fixture they
computed (``tests/fixtures/make_ldm_vq_fixture.py``: random weights, vq-f8's shape at reduced width,
``model.ckpt`` in pytorch-lightning 1.4's container beside ``config.yaml``): ids 100% equal,
reconstructions within 1e-4, end to end and decoding the upstream ids.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import tokbench
from tokbench import CheckpointError, Tokens
from tokbench.cli import main
from tokbench.tokenizers.public import taming, vqmodel, vqmodel_diffusers
from tokbench.tokenizers.vq import VQTokenizer
from helpers import assert_ids_parity

FIXTURE = Path(__file__).parent / "fixtures" / "ldm_vq"
WEIGHTS = FIXTURE / "model.ckpt"
EXPECTED = np.load(FIXTURE / "expected.npz")
X = torch.from_numpy(EXPECTED["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255
TOL = 1e-4


@pytest.mark.parametrize("name", ["ldm-vq-f8", "ldm-vq-f4"])
def test_parity_with_the_upstream_code(name):
    """Either name reads the sizes from config.yaml, so both give upstream's outputs."""
    tokenizer = tokbench.load(name, weights=str(WEIGHTS))
    assert_ids_parity(tokenizer, X, EXPECTED, (2, 8, 8), from_ids="recon_from_ids", tol=TOL)


def test_sizes_read_off_the_tensors_without_config_yaml(tmp_path):
    shutil.copy(WEIGHTS, tmp_path / "model.ckpt")
    tokenizer = tokbench.load("ldm-vq-f8", weights=str(tmp_path / "model.ckpt"))
    assert tokenizer.config["attn_levels"] == [3] and tokenizer.quantize.codebook_size == 256
    assert np.array_equal(tokenizer.encode(X).ids.numpy(), EXPECTED["indices"])


def test_the_file_is_recognised_as_ldm_vq_f8_not_taming():
    assert tokbench.load(WEIGHTS).upstream["name"] == "ldm-vq-f8"
    assert not vqmodel.build_f4.recognizes(WEIGHTS)
    assert not taming.build_f16_16384.recognizes(WEIGHTS) and not taming.build_f16_1024.recognizes(WEIGHTS)


def test_a_three_level_file_is_recognised_as_ldm_vq_f4(tmp_path):
    """vq-f4's shape (three levels, 3-dim codes, no attention outside the middle) written in LDM's names."""
    torch.manual_seed(0)
    small = VQTokenizer(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=3, code_dim=3, codebook_size=64,
                        l2_normalize=False, lowest_level_attn=False, attn_levels=()).eval()
    state = taming.keymap_for(small.config).to_upstream(small.state_dict())
    torch.save({"epoch": 0, "state_dict": state}, tmp_path / "model.ckpt")
    loaded = tokbench.load(tmp_path / "model.ckpt")
    assert loaded.upstream["name"] == "ldm-vq-f4" and loaded.config["attn_levels"] == []
    assert torch.equal(loaded.encode(X).ids, small.encode(X).ids)


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


# aMUSEd's VQ-GAN: a diffusers VQModel folder, parity with diffusers' own VQModel
# (tests/fixtures/make_amused_vqgan_fixture.py: random weights, the release's options at reduced width).
AMUSED = Path(__file__).parent / "fixtures" / "amused_vqgan"
AMUSED_EXPECTED = np.load(AMUSED / "expected.npz")
AMUSED_X = torch.from_numpy(AMUSED_EXPECTED["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255


def _amused_parity(tokenizer) -> None:
    tokens = tokenizer.encode(AMUSED_X)
    assert tokens.ids.shape == AMUSED_EXPECTED["indices"].shape == (2, 16, 16)
    assert (tokens.ids.numpy() == AMUSED_EXPECTED["indices"]).mean() >= 0.999
    assert np.abs(tokenizer.decode(tokens).numpy() - AMUSED_EXPECTED["recon"]).max() <= TOL
    stored = Tokens(tokens.layout, tokens.image_size, ids=torch.from_numpy(AMUSED_EXPECTED["indices"]))
    assert np.abs(tokenizer.decode(stored).numpy() - AMUSED_EXPECTED["recon_from_ids"]).max() <= TOL


def test_amused_parity_with_diffusers():
    tokenizer = tokbench.load("amused-vqgan", weights=str(AMUSED / "vqvae"))
    assert tokenizer.config["mid_attn"] is False and tokenizer.config["unit_range"] is True
    _amused_parity(tokenizer)


def test_amused_pipeline_folder_fp16_variant_and_recognition(tmp_path):
    """A pipeline folder (model_index.json) is read through its vqvae/; the fp16 file is upcast."""
    from safetensors.torch import load_file, save_file

    (tmp_path / "model_index.json").write_text('{"_class_name": "AmusedPipeline"}')
    (tmp_path / "vqvae").mkdir()
    shutil.copy(AMUSED / "vqvae" / "config.json", tmp_path / "vqvae" / "config.json")
    state = load_file(AMUSED / "vqvae" / "diffusion_pytorch_model.safetensors")
    save_file({k: v.half() for k, v in state.items()}, tmp_path / "vqvae" / "diffusion_pytorch_model.fp16.safetensors")
    tokenizer = tokbench.load(tmp_path)
    assert tokenizer.upstream["name"] == "amused-vqgan"
    assert tokenizer.quantize.embedding.dtype == torch.float32
    ids = tokenizer.encode(AMUSED_X).ids.numpy()
    assert (ids == AMUSED_EXPECTED["indices"]).mean() > 0.9  # fp16-rounded weights: nearly the same ids


def test_amused_convert_keeps_range_and_middle(tmp_path):
    assert main(["convert", "amused-vqgan", "--weights", str(AMUSED / "vqvae"), str(tmp_path / "ckpt")]) == 0
    _amused_parity(tokbench.load(tmp_path / "ckpt"))


def test_a_movq_folder_and_overrides_are_refused_by_the_amused_name(tmp_path):
    shutil.copytree(AMUSED / "vqvae", tmp_path / "movq")
    config = json.loads((tmp_path / "movq" / "config.json").read_text())
    (tmp_path / "movq" / "config.json").write_text(json.dumps({**config, "norm_type": "spatial"}))
    with pytest.raises(CheckpointError, match="norm_type='spatial' is not supported by this name") as err:
        tokbench.load("amused-vqgan", weights=str(tmp_path / "movq"))
    assert "\n" not in str(err.value)
    assert not vqmodel_diffusers.recognizes_amused(tmp_path / "movq")
    assert vqmodel_diffusers.recognizes_movq(tmp_path / "movq")
    with pytest.raises(ValueError, match="option unit_range cannot be changed: the release fixes unit_range=True"):
        tokbench.load("amused-vqgan", weights=str(AMUSED / "vqvae"), unit_range=False)


def test_vq_family_range_and_middle_options():
    """[0, 1] networks see the images as they are; [-1, 1] ones see 2x - 1; no middle attention, no tensors."""
    torch.manual_seed(0)
    unit = VQTokenizer(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=8, codebook_size=16, code_dim=4,
                       mid_attn=False, unit_range=True).eval()
    signed = VQTokenizer(**{**unit.config, "unit_range": False}).eval()
    signed.load_state_dict(unit.state_dict())
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose(unit.features(x), signed.features((x + 1) / 2), atol=1e-6)
    assert not any(".attn" in k or "mid.1." in k for k in unit.state_dict())


# Kandinsky's MoVQ: a diffusers VQModel folder with spatial norms, parity with diffusers' own VQModel
# (tests/fixtures/make_kandinsky_movq_fixture.py: random weights, MOVQ_CONFIG's block pattern at reduced width).
MOVQ = Path(__file__).parent / "fixtures" / "kandinsky_movq"
MOVQ_EXPECTED = np.load(MOVQ / "expected.npz")
MOVQ_X = torch.from_numpy(MOVQ_EXPECTED["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255


def _movq_parity(tokenizer) -> None:
    tokens = tokenizer.encode(MOVQ_X)
    assert tokens.ids.shape == MOVQ_EXPECTED["indices"].shape == (2, 16, 16)
    assert (tokens.ids.numpy() == MOVQ_EXPECTED["indices"]).mean() >= 0.999
    assert np.abs(tokenizer.decode(tokens).numpy() - MOVQ_EXPECTED["recon"]).max() <= TOL
    stored = Tokens(tokens.layout, tokens.image_size, ids=torch.from_numpy(MOVQ_EXPECTED["indices"]))
    assert np.abs(tokenizer.decode(stored).numpy() - MOVQ_EXPECTED["recon_from_ids"]).max() <= TOL


def test_kandinsky_movq_parity_with_diffusers():
    tokenizer = tokbench.load("kandinsky-movq", weights=str(MOVQ / "movq"))
    assert tokenizer.family == "movq" and tokenizer.config["attn_levels"] == [2]
    _movq_parity(tokenizer)


def test_kandinsky_pipeline_folder_is_recognised_and_converts(tmp_path):
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "model_index.json").write_text('{"_class_name": "KandinskyV22Pipeline"}')
    shutil.copytree(MOVQ / "movq", tmp_path / "pipe" / "movq")
    tokenizer = tokbench.load(tmp_path / "pipe")
    assert tokenizer.upstream["name"] == "kandinsky-movq"
    assert not vqmodel_diffusers.recognizes_amused(tmp_path / "pipe")
    assert main(["convert", "kandinsky-movq", "--weights", str(tmp_path / "pipe"), str(tmp_path / "ckpt")]) == 0
    _movq_parity(tokbench.load(tmp_path / "ckpt"))


def test_the_conditioning_is_the_quantized_map():
    """Decoding with the norms conditioned on post_quant_conv's output instead moves the images."""
    tokenizer = tokbench.load("kandinsky-movq", weights=str(MOVQ / "movq"))
    zq = tokenizer.quantize.lookup(torch.from_numpy(MOVQ_EXPECTED["indices"]), channel_dim=1)
    z = tokenizer.post_quant_conv(zq)
    with torch.no_grad():
        wrong = ((tokenizer.decoder(z, z) + 1) / 2).clamp(0, 1).numpy()
    assert np.abs(wrong - MOVQ_EXPECTED["recon_from_ids"]).max() > 0.01


def test_a_group_norm_folder_is_refused_by_the_movq_name(tmp_path):
    with pytest.raises(CheckpointError, match="norm_type='group' is not supported by this name .*expected 'spatial'"):
        tokbench.load("kandinsky-movq", weights=str(AMUSED / "vqvae"))
