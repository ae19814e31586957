"""MAR's KL-16 (LTH14/mar ``kl16.ckpt``) against MAR's own ``AutoencoderKL``.

The fixture (``tests/fixtures/make_mar_kl16_fixture.py``) is MAR's ``models/vae.py`` at reduced
width with random weights, saved in the release's ``{"model": state_dict}`` container, with the
latents and reconstructions MAR's code computed. Parity: latents (the posterior mean) and
reconstructions within 1e-4, end to end and decoding MAR's own latents. The fixture keeps the
release's five levels, 16 latent channels and its asymmetric attention (the encoder's lowest
level has it, the decoder's levels none), which the loader reads off the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tokbench
from tokbench import CheckpointError, registry
from tokbench.cli import main
from tokbench.tokenizers.public.conv_keys import autoencoder_keymap
from helpers import assert_latents_parity

WEIGHTS = Path(__file__).parent / "fixtures" / "mar_kl16" / "kl16.ckpt"
EXPECTED = np.load(WEIGHTS.parent / "expected.npz")
X = torch.from_numpy(EXPECTED["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255
TOL = 1e-4


def test_parity_with_the_upstream_code():
    tokenizer = tokbench.load("mar-kl16", weights=str(WEIGHTS))
    assert_latents_parity(tokenizer, X, EXPECTED, (2, 16, 3, 3), tol=TOL)  # f16, 16 channels, on 48 px


def test_sizes_and_the_encoder_only_attention_are_read_off_the_file():
    cfg = tokbench.load("mar-kl16", weights=str(WEIGHTS)).config
    assert (cfg["ch"], tuple(cfg["ch_mult"]), cfg["num_res_blocks"], cfg["latent_channels"]) == (32, (1,) * 5, 1, 16)
    assert list(cfg["enc_attn_levels"]) == [4] and cfg["dec_attn_levels"] is None and cfg["use_quant_conv"]


def test_the_encoder_attention_changes_the_latents(tmp_path):
    """The level-4 attention is live in MAR's encoder: the same file without it encodes differently."""
    blob = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    state = {k: v for k, v in blob["model"].items() if not k.startswith("encoder.down.4.attn.")}
    torch.save({"model": state}, tmp_path / "kl16.ckpt")
    without = tokbench.load("mar-kl16", weights=str(tmp_path / "kl16.ckpt"))
    assert without.config["enc_attn_levels"] is None
    assert np.abs(without.encode(X).latents.numpy() - EXPECTED["latents"]).max() > 100 * TOL


def test_the_release_facts_are_mar_s():
    release = registry.get_factory("mar-kl16").release
    assert release.files.startswith(WEIGHTS.name) and "LTH14/mar" in release.published
    assert "ADM" in release.preprocessing  # MAR's center_crop_arr is ADM's
    # MAR's engine scales the posterior by 0.2325 for its diffusion head: recorded, never applied.
    tokenizer = tokbench.load("mar-kl16", weights=str(WEIGHTS))
    assert tokenizer.upstream["diffusion_latents"] == {"shift": 0.0, "scale": 0.2325}


def test_a_missing_tensor_is_a_one_line_error(tmp_path):
    blob = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    state = dict(blob["model"])
    del state["decoder.up.4.block.0.conv1.weight"]
    torch.save({"model": state}, tmp_path / "broken.ckpt")
    with pytest.raises(CheckpointError, match="missing keys.*decoder.up.4.block.0.conv1.weight") as err:
        tokbench.load("mar-kl16", weights=str(tmp_path / "broken.ckpt"))
    assert "\n" not in str(err.value)


def test_convert_round_trips(tmp_path):
    assert main(["convert", "mar-kl16", "--weights", str(WEIGHTS), str(tmp_path / "ckpt")]) == 0
    plain = tokbench.load(tmp_path / "ckpt")
    assert plain.config["enc_attn_levels"] == [4] and plain.config["dec_attn_levels"] is None
    assert np.abs(plain.encode(X).latents.numpy() - EXPECTED["latents"]).max() <= TOL
    assert torch.equal(plain.reconstruct(X), tokbench.load("mar-kl16", weights=str(WEIGHTS)).reconstruct(X))


def test_release_configuration_has_the_upstream_size():
    """312 keys and 66,456,019 elements: MAR's ``AutoencoderKL(embed_dim=16, ch_mult=(1, 1, 2, 2, 4))``
    counted with the upstream class (20 encoder attention keys at level 4, none in the decoder's levels)."""
    with torch.device("meta"):
        model = registry.create("mar-kl16")
    cfg = model.config
    km = autoencoder_keymap("ldm", cfg["ch"], tuple(cfg["ch_mult"]), cfg["num_res_blocks"],
                            attn_levels=cfg["enc_attn_levels"], dec_attn_levels=cfg["dec_attn_levels"] or ())
    own = model.state_dict()
    assert {e.dst for e in km.entries} == set(own)
    assert (len(km.upstream_keys()), sum(own[e.dst].numel() for e in km.entries)) == (312, 66_456_019)
    layout = model.layout_for(256, 256)
    assert (layout.latent_channels, layout.num_tokens) == (16, 256)
