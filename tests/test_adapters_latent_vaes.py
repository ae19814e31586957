"""The latent-diffusion VAEs: SDXL, SD3/SD3.5 and FLUX.1 (diffusers ``vae/`` and BFL's ``ae.safetensors``).

Parity with the upstream code on the small upstream-made fixtures (``../shared/adapter-fixtures``):
latents (the posterior mean) within 1e-4 and reconstructions within 1e-4, end to end and when
decoding the stored latents; the release sizes; recognition of each form; and ``tokbench eval``
end to end on the FLUX.1 fixture.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import tokbench
from tokbench import CheckpointError, Tokens, registry
from tokbench.cli import main
from tokbench.tokenizers.public.conv_keys import autoencoder_keymap

# Beside the repo checkout; TOKBENCH_ADAPTER_FIXTURES points elsewhere (a worktree, CI).
FIXTURES = Path(os.environ.get("TOKBENCH_ADAPTER_FIXTURES",
                               Path(__file__).resolve().parents[1].parent / "shared" / "adapter-fixtures"))
TOL = 1e-4
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"adapter fixtures not found at {FIXTURES}")

# (public name, weights relative to the fixtures, dtype the file stores)
FORMS = [
    ("sdxl-vae", "sdxl-vae/checkpoint/vae", torch.float32),
    ("sd3-vae", "sd3-vae/checkpoint/vae", torch.float16),
    ("flux1-vae", "flux1-vae/checkpoint/vae", torch.bfloat16),
    ("flux1-ae", "flux1-ae/checkpoint/ae.safetensors", torch.float32),
]


def _expected(name: str, array: str) -> np.ndarray:
    return np.load(FIXTURES / name / "expected" / f"{array}.npy")


def _stored_dtype(weights: Path) -> torch.dtype:
    file = weights / "diffusion_pytorch_model.safetensors" if weights.is_dir() else weights
    with safe_open(str(file), "pt") as f:
        return f.get_tensor(next(iter(f.keys()))).dtype


@needs_fixtures
@pytest.mark.parametrize("name,weights,dtype", FORMS, ids=[f[0] for f in FORMS])
def test_parity_with_the_upstream_code(name, weights, dtype):
    assert _stored_dtype(FIXTURES / weights) == dtype  # the 16-bit forms are upcast, not refused
    tokenizer = tokbench.load(name, weights=str(FIXTURES / weights))
    assert all(p.dtype == torch.float32 for p in tokenizer.parameters())
    x = torch.from_numpy(_expected(name, "inputs"))
    latents_up, recon_up = _expected(name, "latents"), _expected(name, "recon")

    tokens = tokenizer.encode(x)
    assert np.abs(tokens.latents.numpy() - latents_up).max() <= TOL
    assert np.abs(tokenizer.decode(tokens).numpy() - recon_up).max() <= TOL
    stored = Tokens(tokens.layout, tokens.image_size, latents=torch.from_numpy(latents_up))
    assert np.abs(tokenizer.decode(stored).numpy() - recon_up).max() <= TOL


@needs_fixtures
@pytest.mark.parametrize("name,weights,dtype", FORMS, ids=[f[0] for f in FORMS])
def test_each_form_is_recognised_as_its_release(name, weights, dtype):
    tokenizer = tokbench.load(FIXTURES / weights)
    assert tokenizer.upstream["name"] == name
    has_quant_convs = name == "sdxl-vae"
    assert isinstance(tokenizer.quant_conv, torch.nn.Conv2d) == has_quant_convs


@needs_fixtures
def test_flux_shift_and_scale_give_upstream_encode():
    """BFL's encode() returns (mean - shift) * scale; tokbench records both and keeps the mean."""
    tokenizer = tokbench.load("flux1-ae", weights=str(FIXTURES / FORMS[3][1]))
    space = tokenizer.upstream["diffusion_latents"]
    assert space == {"shift": 0.1159, "scale": 0.3611}
    latents = tokenizer.encode(torch.from_numpy(_expected("flux1-ae", "inputs"))).latents
    scaled = (latents - space["shift"]) * space["scale"]
    assert np.abs(scaled.numpy() - _expected("flux1-ae", "latents_scaled")).max() <= TOL


@needs_fixtures
def test_convert_without_quant_convs_round_trips(tmp_path):
    weights = FIXTURES / FORMS[3][1]
    assert main(["convert", "flux1-ae", "--weights", str(weights), str(tmp_path / "ckpt")]) == 0
    plain = tokbench.load(tmp_path / "ckpt")
    assert plain.config["use_quant_conv"] is False and not hasattr(plain, "upstream")
    x = torch.from_numpy(_expected("flux1-ae", "inputs"))
    assert torch.equal(plain.reconstruct(x), tokbench.load("flux1-ae", weights=str(weights)).reconstruct(x))


@needs_fixtures
def test_mismatched_quant_conv_flags_are_one_line(tmp_path):
    folder = tmp_path / "vae"
    folder.mkdir()
    source = FIXTURES / FORMS[1][1]
    config = json.loads((source / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "use_quant_conv": True}))
    (folder / "diffusion_pytorch_model.safetensors").symlink_to(source / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CheckpointError, match="use_quant_conv=True with use_post_quant_conv=False") as err:
        tokbench.load("sd3-vae", weights=str(folder))
    assert "\n" not in str(err.value)


def test_the_family_default_keeps_its_quant_convs():
    with_convs = registry.create("vae:size=tiny")
    without = registry.create("vae:size=tiny,use_quant_conv=false")
    assert {"quant_conv.weight", "post_quant_conv.weight"} <= set(with_convs.state_dict())
    assert not any("quant_conv" in k for k in without.state_dict())
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32)
    assert without.encode(x).latents.shape == with_convs.encode(x).latents.shape == (1, 4, 8, 8)


# (name, keys, tensor elements) of the released files (fixture README; SDXL's equals SD's)
RELEASE_SIZES = [("sdxl-vae", 248, 83_653_863), ("sd3-vae", 244, 83_819_683), ("flux1-vae", 244, 83_819_683),
                 ("flux1-ae", 244, 83_819_683)]


@pytest.mark.parametrize("name,keys,elements", RELEASE_SIZES, ids=[r[0] for r in RELEASE_SIZES])
def test_release_configuration_has_the_public_file_size(name, keys, elements):
    with torch.device("meta"):
        model = registry.create(name)
    cfg = model.config
    km = autoencoder_keymap("diffusers" if name.endswith("-vae") else "ldm", cfg["ch"], tuple(cfg["ch_mult"]),
                            cfg["num_res_blocks"], quant_convs=cfg["use_quant_conv"])
    own = model.state_dict()
    assert {e.dst for e in km.entries} == set(own)
    assert (len(km.upstream_keys()), sum(own[e.dst].numel() for e in km.entries)) == (keys, elements)
    assert model.layout_for(256, 256).latent_channels == (4 if name == "sdxl-vae" else 16)


@needs_fixtures
def test_eval_end_to_end_on_the_flux_fixture(tmp_path):
    """`tokbench eval --tokenizer flux1-vae --weights DIR`: PSNR of the upstream's own reconstructions."""
    data = tmp_path / "data"
    data.mkdir()
    images = _expected("flux1-vae", "inputs_uint8")
    for i, image in enumerate(images):
        Image.fromarray(image).save(data / f"{i}.png")
    out = subprocess.run([sys.executable, "-m", "tokbench", "eval", "--tokenizer", "flux1-vae", "--weights",
                          str(FIXTURES / FORMS[2][1]), "--tasks", "reconstruction", "--data", str(data),
                          "--resolution", "native", "--skip-metric", "lpips,rfid", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TOKBENCH_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    psnr = results["tasks"]["reconstruction"]["metrics"]["psnr"]["mean"]
    # Reference: the upstream reconstructions, rounded to 8 bits as eval's images are, against the inputs.
    recon = np.round(_expected("flux1-vae", "recon").transpose(0, 2, 3, 1) * 255)
    mse = ((recon - images.astype(np.float64)) ** 2).reshape(len(images), -1).mean(1)
    reference = float(np.mean(10 * np.log10(255.0 ** 2 / mse)))
    assert results["tokenizer"]["name"].startswith("flux1-vae")
    assert abs(psnr - reference) < 0.05, (psnr, reference)
