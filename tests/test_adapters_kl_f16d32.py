"""VA-VAE (hustvl/LightningDiT) and REPA-E's E2E-VAEs: LDM KL-VAEs read by the ``vae`` loader.

Parity with the upstream code on two small fixtures made by it (``tests/fixtures/
make_kl_f16d32_fixtures.py``: LightningDiT's and REPA-E's own ``AutoencoderKL`` at reduced width,
random weights, saved in each release's container): latents (the posterior mean) and
reconstructions within 1e-4. The VA-VAE fixture is a Lightning ``state_dict`` with the training-only
DINOv2/projection/loss entries that must be ignored; whether the released ``.pt`` carries that
wrapper or the bare state dict is not confirmed here (LightningDiT's reader takes both; both are
tested). Release sizes are the upstream classes' own counts (69,836,067 elements in 342 keys for
f16d32; REPA-E's f8d4 is SD's 248 keys / 83,653,863).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tokbench
from tokbench import Tokens, registry
from tokbench.cli import main
from tokbench.tokenizers.public.conv_keys import autoencoder_keymap

HERE = Path(__file__).parent / "fixtures"
VA_VAE = HERE / "va_vae_f16d32" / "vavae-imagenet256-f16d32-dinov2.pt"
E2E_VAVAE = HERE / "repa_e_e2e_vae" / "e2e-vavae-400k.pt"
TOL = 1e-4


def _expected(weights: Path) -> dict[str, np.ndarray]:
    blob = np.load(weights.parent / "expected.npz")
    return {k: blob[k] for k in blob.files}


def _inputs(expected: dict[str, np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(expected["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("name,weights", [("va-vae-f16d32", VA_VAE), ("e2e-vavae", E2E_VAVAE)])
def test_parity_with_the_upstream_code(name, weights):
    expected = _expected(weights)
    tokenizer = tokbench.load(name, weights=str(weights))
    tokens = tokenizer.encode(_inputs(expected))
    assert tokens.latents.shape == expected["latents"].shape == (2, 8, 3, 3)  # f16 on 48 px
    assert np.abs(tokens.latents.numpy() - expected["latents"]).max() <= TOL
    assert np.abs(tokenizer.decode(tokens).numpy() - expected["recon"]).max() <= TOL
    stored = Tokens(tokens.layout, tokens.image_size, latents=torch.from_numpy(expected["latents"]))
    assert np.abs(tokenizer.decode(stored).numpy() - expected["recon"]).max() <= TOL


def test_sizes_and_attention_levels_are_read_off_the_file():
    tokenizer = tokbench.load("va-vae-f16d32", weights=str(VA_VAE))
    cfg = tokenizer.config
    assert (cfg["ch"], tuple(cfg["ch_mult"]), cfg["num_res_blocks"], cfg["latent_channels"]) == (32, (1,) * 5, 1, 8)
    assert list(cfg["enc_attn_levels"]) == list(cfg["dec_attn_levels"]) == [4]


def test_bare_state_dict_form_of_va_vae_loads_the_same(tmp_path):
    """LightningDiT's reader also takes a bare state dict; the training-only entries change nothing."""
    blob = torch.load(VA_VAE, map_location="cpu", weights_only=True)
    assert {"linear_proj.weight", "loss.logvar", "foundation_model.model.cls_token"} <= set(blob["state_dict"])
    bare = {k: v for k, v in blob["state_dict"].items() if k.startswith(("encoder.", "decoder.", "quant_conv.",
                                                                          "post_quant_conv."))}
    torch.save(bare, tmp_path / "bare.pt")
    x = _inputs(_expected(VA_VAE))
    a = tokbench.load("va-vae-f16d32", weights=str(VA_VAE)).encode(x).latents
    b = tokbench.load("va-vae-f16d32", weights=str(tmp_path / "bare.pt")).encode(x).latents
    assert torch.equal(a, b)


def test_va_vae_checkpoint_is_recognised_by_its_keys():
    assert tokbench.load(VA_VAE).upstream["name"] == "va-vae-f16d32"


def test_a_bare_f16d32_file_asks_which_release_it_is():
    with pytest.raises(tokbench.CheckpointError, match="could be any of e2e-invae, e2e-vavae, va-vae-f16d32; name it"):
        tokbench.load(E2E_VAVAE)


def test_a_missing_tensor_is_a_one_line_error(tmp_path):
    state = torch.load(E2E_VAVAE, map_location="cpu", weights_only=True)
    del state["decoder.up.4.attn.1.q.weight"]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(tokbench.CheckpointError, match="missing keys.*decoder.up.4.attn.1.q.weight") as err:
        tokbench.load("e2e-vavae", weights=str(tmp_path / "broken.pt"))
    assert "\n" not in str(err.value)


def test_convert_round_trips(tmp_path):
    assert main(["convert", "e2e-vavae", "--weights", str(E2E_VAVAE), str(tmp_path / "ckpt")]) == 0
    plain = tokbench.load(tmp_path / "ckpt")
    x = _inputs(_expected(E2E_VAVAE))
    assert torch.equal(plain.reconstruct(x), tokbench.load("e2e-vavae", weights=str(E2E_VAVAE)).reconstruct(x))


# (name, keys, tensor elements): counted from the upstream classes at the release configuration
RELEASE_SIZES = [("va-vae-f16d32", 342, 69_836_067), ("e2e-vavae", 342, 69_836_067),
                 ("e2e-invae", 342, 69_836_067), ("e2e-sdvae", 248, 83_653_863)]


@pytest.mark.parametrize("name,keys,elements", RELEASE_SIZES, ids=[r[0] for r in RELEASE_SIZES])
def test_release_configuration_has_the_upstream_size(name, keys, elements):
    with torch.device("meta"):
        model = registry.create(name)
    cfg = model.config
    km = autoencoder_keymap("ldm", cfg["ch"], tuple(cfg["ch_mult"]), cfg["num_res_blocks"],
                            attn_levels=cfg["enc_attn_levels"], dec_attn_levels=cfg["dec_attn_levels"] or ())
    own = model.state_dict()
    assert {e.dst for e in km.entries} == set(own)
    assert (len(km.upstream_keys()), sum(own[e.dst].numel() for e in km.entries)) == (keys, elements)
    layout = model.layout_for(256, 256)
    assert (layout.latent_channels, layout.num_tokens) == ((32, 256) if keys == 342 else (4, 1024))
