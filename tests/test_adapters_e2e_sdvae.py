"""REPA-E's E2E-SDVAE (its f8d4 ``AutoencoderKL``, a bare state dict) against REPA-E's own code.

The fixture (``tests/fixtures/make_e2e_sdvae_fixture.py``) is REPA-E's ``vae_models["f8d4"]`` at
reduced width with random weights, saved as ``save_vae_weights.py`` saves the release
(``e2e-sdvae-400k.pt``), with the latents and reconstructions REPA-E's code computed. Parity:
latents (the posterior mean) and reconstructions within 1e-4, end to end and decoding REPA-E's own
latents.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tokbench
from tokbench import CheckpointError, registry
from tokbench.cli import main
from tokbench.tokenizers.public import sd_vae
from helpers import assert_latents_parity

WEIGHTS = Path(__file__).parent / "fixtures" / "e2e_sdvae" / "e2e-sdvae-400k.pt"
EXPECTED = np.load(WEIGHTS.parent / "expected.npz")
X = torch.from_numpy(EXPECTED["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255
TOL = 1e-4


def test_parity_with_the_upstream_code():
    tokenizer = tokbench.load("e2e-sdvae", weights=str(WEIGHTS))
    assert_latents_parity(tokenizer, X, EXPECTED, (2, 4, 6, 6), tol=TOL)  # f8, 4 channels, on 48 px


def test_sizes_are_read_off_the_file_and_there_is_no_level_attention():
    cfg = tokbench.load("e2e-sdvae", weights=str(WEIGHTS)).config
    assert (cfg["ch"], tuple(cfg["ch_mult"]), cfg["num_res_blocks"], cfg["latent_channels"]) == (32, (1,) * 4, 1, 4)
    assert cfg["enc_attn_levels"] is None and cfg["dec_attn_levels"] is None and cfg["use_quant_conv"]


def test_the_release_facts_are_repa_e_s():
    tokenizer = tokbench.load("e2e-sdvae", weights=str(WEIGHTS))
    assert tokenizer.upstream["name"] == "e2e-sdvae"
    release = registry.get_factory("e2e-sdvae").release
    assert "REPA-E/e2e-sdvae" in release.published and "ADM" in release.preprocessing
    assert release.files.startswith(WEIGHTS.name)  # the released name, as REPA-E's scripts load it


def test_alone_the_file_reads_as_sd_vae_with_the_same_outputs():
    """SD's layout: loaded without a name it is taken for SD's VAE, whose architecture it is."""
    assert sd_vae.ldm_releases(frozenset(torch.load(WEIGHTS, weights_only=True))) == ("sd-vae-kl-f8",)
    plain = tokbench.load(WEIGHTS)
    assert plain.upstream["name"] == "sd-vae-kl-f8"
    assert np.abs(plain.encode(X).latents.numpy() - EXPECTED["latents"]).max() <= TOL


def test_a_truncated_state_dict_is_one_line(tmp_path):
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    del state["post_quant_conv.weight"], state["post_quant_conv.bias"]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match=r"missing keys \[post_quant_conv") as err:
        tokbench.load("e2e-sdvae", weights=str(tmp_path / "broken.pt"))
    assert "\n" not in str(err.value)


def test_convert_then_load_gives_the_same_latents(tmp_path):
    assert main(["convert", "e2e-sdvae", "--weights", str(WEIGHTS), str(tmp_path / "ckpt")]) == 0
    latents = tokbench.load(tmp_path / "ckpt").encode(X).latents.numpy()
    assert np.abs(latents - EXPECTED["latents"]).max() <= TOL
