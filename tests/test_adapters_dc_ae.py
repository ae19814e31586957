"""DC-AE (SANA's autoencoder, diffusers ``AutoencoderDC``): parity with the upstream code on the
small upstream-made fixture, the release size, the attention's two forms, conversion and errors."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import tokbench
from tokbench import CheckpointError, Tokens, registry
from tokbench.cli import main
from tokbench.tokenizers.public.dc_ae import keymap_for
from tokbench.tokenizers.public.dc_ae_model import MultiScaleLinearAttention

# Beside the repo checkout; TOKBENCH_ADAPTER_FIXTURES points elsewhere (a worktree, CI).
FIXTURES = Path(os.environ.get("TOKBENCH_ADAPTER_FIXTURES",
                               Path(__file__).resolve().parents[1].parent / "shared" / "adapter-fixtures"))
DC = FIXTURES / "dc-ae-f32c32"
TOL = 1e-4
needs_fixture = pytest.mark.skipif(not DC.is_dir(), reason=f"adapter fixture not found at {DC}")


def _expected(array: str) -> np.ndarray:
    return np.load(DC / "expected" / f"{array}.npy")


def _load():
    return tokbench.load("dc-ae-f32c32", weights=str(DC / "checkpoint/vae"))


@needs_fixture
def test_parity_with_the_upstream_code():
    tokenizer = _load()
    x = torch.from_numpy(_expected("inputs"))
    latents_up, recon_up = _expected("latents"), _expected("recon")
    tokens = tokenizer.encode(x)
    assert tokens.latents.shape == (2, 32, 2, 2)  # f32 with 32 channels at 64 px
    assert np.abs(tokens.latents.numpy() - latents_up).max() <= TOL
    assert np.abs(tokenizer.decode(tokens).numpy() - recon_up).max() <= TOL
    stored = Tokens(tokens.layout, tokens.image_size, latents=torch.from_numpy(latents_up))
    assert np.abs(tokenizer.decode(stored).numpy() - recon_up).max() <= TOL


@needs_fixture
def test_the_folder_is_recognised_and_records_the_scaling_factor():
    tokenizer = tokbench.load(DC / "checkpoint/vae")
    assert tokenizer.upstream["name"] == "dc-ae-f32c32" and tokenizer.family == "dc_ae"
    assert tokenizer.upstream["diffusion_latents"] == {"shift": 0.0, "scale": 0.41407}


@needs_fixture
def test_convert_gives_a_plain_dc_ae_checkpoint(tmp_path):
    assert main(["convert", "dc-ae-f32c32", "--weights", str(DC / "checkpoint/vae"), str(tmp_path / "ckpt")]) == 0
    plain = tokbench.load(tmp_path / "ckpt")
    assert plain.family == "dc_ae" and not hasattr(plain, "upstream")
    x = torch.from_numpy(_expected("inputs"))
    assert torch.equal(plain.reconstruct(x), _load().reconstruct(x))


@needs_fixture
def test_an_unsupported_config_is_one_line(tmp_path):
    folder = tmp_path / "vae"
    folder.mkdir()
    config = json.loads((DC / "checkpoint/vae/config.json").read_text())
    config["encoder_block_types"] = ["ResBlock"] * 5 + ["SwinBlock"]
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "diffusion_pytorch_model.safetensors").symlink_to(DC / "checkpoint/vae/diffusion_pytorch_model.safetensors")
    with pytest.raises(CheckpointError, match=r"encoder block types \['SwinBlock'\] not supported") as err:
        tokbench.load("dc-ae-f32c32", weights=str(folder))
    assert "\n" not in str(err.value)


def test_release_configuration_has_the_public_file_size():
    """375 keys and 312,250,275 weights: mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers (fixture README)."""
    with torch.device("meta"):
        model = registry.create("dc-ae-f32c32")
    km, own = keymap_for(model), model.state_dict()
    assert len(km.upstream_keys()) == 375
    assert sum(own[e.dst].numel() for e in km.entries) == 312_250_275
    layout = model.layout_for(256, 256)
    assert layout.grid == (8, 8) and layout.latent_channels == 32


def test_linear_attention_equals_its_quadratic_form():
    """sum_n v_n (k_n . q_m) / sum_n (k_n . q_m), computed both ways and directly."""
    torch.manual_seed(0)
    q, k, v = torch.rand(2, 3, 8, 50, dtype=torch.float64), torch.rand(2, 3, 8, 50, dtype=torch.float64), \
        torch.randn(2, 3, 8, 50, dtype=torch.float64)
    weights = torch.einsum("bgdn,bgdm->bgnm", k, q)  # key n, query m
    direct = torch.einsum("bgdn,bgnm->bgdm", v, weights / weights.sum(2, keepdim=True))
    assert torch.allclose(MultiScaleLinearAttention._linear(q, k, v), direct, atol=1e-12)
    assert torch.allclose(MultiScaleLinearAttention._quadratic(q, k, v).double(), direct, atol=1e-6)


def test_a_small_dc_ae_trains_a_step():
    model = tokbench.tokenizers.public.dc_ae.build_dc_ae_family(
        latent_channels=8, attention_head_dim=8, encoder_block_out_channels=[8, 16, 16],
        decoder_block_out_channels=[8, 16, 16], encoder_layers_per_block=[0, 1, 1], decoder_layers_per_block=[0, 1, 1],
        encoder_block_types=["ResBlock", "ResBlock", "EfficientViTBlock"],
        decoder_block_types=["ResBlock", "ResBlock", "EfficientViTBlock"],
        encoder_qkv_multiscales=[[], [], [3]], decoder_qkv_multiscales=[[], [], [3]])
    x = torch.rand(2, 3, 32, 32)
    assert model.encode(x).latents.shape == (2, 8, 8, 8)  # stage 0 empty: the input conv downsamples
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = (model.autoencode(x).reconstruction - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_list_shows_family_layout_and_released_file(capsys):
    assert main(["list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    for name, family, file in [("dc-ae-f32c32", "dc_ae", "diffusion_pytorch_model.safetensors"),
                               ("flux1-ae", "vae", "ae.safetensors"), ("sd3-vae", "vae", "float16")]:
        fields = rows[name].split()
        assert fields[2] == family and file in rows[name]
    assert rows["dc-ae-f32c32"].split()[5:7] == ["64", "32"]  # 8x8 latents of 32 channels at 256 px
