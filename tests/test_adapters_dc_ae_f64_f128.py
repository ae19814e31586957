"""DC-AE's f64c128 and f128c512 ImageNet releases, built by the code of ``dc-ae-f32c32``.

Release sizes are checked on the meta device against diffusers' own ``AutoencoderDC`` at the
release configs (keys and elements counted with diffusers 0.42.1) and against the published file
sizes; the option values against the released ``config.json``. Their layout (empty stage 0,
pixel-(un)shuffle resampling, BatchNorm/ReLU decoder stages, no multi-scale aggregation) is
checked for parity on a small fixture made by diffusers' ``AutoencoderDC``
(``tests/fixtures/make_dc_ae_f64c128_fixture.py``): latents and reconstructions within 1e-4.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import tokbench
from tokbench import registry
from tokbench.cli import main
from tokbench.tokenizers.public import dc_ae
from helpers import assert_latents_parity

FOLDER = Path(__file__).parent / "fixtures" / "dc_ae_f64c128"
EXPECTED = np.load(FOLDER / "expected.npz")
X = torch.from_numpy(EXPECTED["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255
TOL = 1e-4
SHARED_F32 = Path(os.environ.get("TOKBENCH_ADAPTER_FIXTURES", Path(__file__).resolve().parents[1].parent / "shared"
                                 / "adapter-fixtures")) / "dc-ae-f32c32" / "checkpoint" / "vae"

# name: (keys, elements) of diffusers' AutoencoderDC state dict at the release config (counted with
# diffusers 0.42.1 on the meta device), the published safetensors size in decimal GB (float32; the
# HF file listings: 4.48 GB for dc-ae-f128c512-in-1.0-diffusers, 2.71 GB for dc-ae-f64c128-mix-1.0,
# the same architecture as -in-1.0), the latent grid and channels at 512 px (f64: 8 x 8 x 128,
# f128: 4 x 4 x 512, the DC-AE paper's names).
RELEASE_SIZES = {
    "dc-ae-f64c128": (418, 676_908_955, 2.71, (8, 8), 128),
    "dc-ae-f128c512": (474, 1_120_695_067, 4.48, (4, 4), 512),
}


@pytest.mark.parametrize("name", list(RELEASE_SIZES))
def test_release_configuration_matches_the_published_files(name):
    keys, elements, gigabytes, grid, channels = RELEASE_SIZES[name]
    with torch.device("meta"):
        model = registry.create(name)
    km, own = dc_ae.keymap_for(model), model.state_dict()
    assert len(km.upstream_keys()) == keys
    assert sum(own[e.dst].numel() for e in km.entries) == elements
    file_bytes = sum(t.numel() * t.element_size() for t in own.values())  # float32 weights, int64 BN step counts
    assert round(file_bytes / 1e9, 2) == gigabytes
    layout = model.layout_for(512, 512)
    assert (layout.grid, layout.latent_channels) == (grid, channels)


def test_options_are_the_released_config_json():
    """mit-han-lab/dc-ae-f128c512-in-1.0-diffusers' config.json (commit 91f26ad): the fields from
    ``_class_name`` to ``encoder_qkv_multiscales`` as published; ``latent_channels`` and
    ``scaling_factor`` from diffusers' converter (``get_ae_config``), ``upsample_block_type``
    ``AutoencoderDC``'s default, which the converter keeps. Against the options the name builds with."""
    stages = ["ResBlock"] * 3 + ["EfficientViTBlock"] * 5
    released = {
        "_class_name": "AutoencoderDC", "_diffusers_version": "0.32.0.dev0", "attention_head_dim": 32,
        "decoder_act_fns": ["relu"] * 3 + ["silu"] * 5,
        "decoder_block_out_channels": [128, 256, 512, 512, 1024, 1024, 2048, 2048], "decoder_block_types": stages,
        "decoder_layers_per_block": [0, 5, 10, 2, 2, 2, 2, 2], "decoder_norm_types": ["batch_norm"] * 3 + ["rms_norm"] * 5,
        "decoder_qkv_multiscales": [[]] * 8, "downsample_block_type": "pixel_unshuffle",
        "encoder_block_out_channels": [128, 256, 512, 512, 1024, 1024, 2048, 2048], "encoder_block_types": stages,
        "encoder_layers_per_block": [0, 4, 8, 2, 2, 2, 2, 2], "encoder_qkv_multiscales": [[]] * 8,
        "in_channels": 3, "latent_channels": 512, "scaling_factor": 0.4883, "upsample_block_type": "pixel_shuffle"}
    from_file = dc_ae.options_from_config(released, Path("config.json"))
    release = dc_ae.RELEASES["dc-ae-f128c512"]
    assert {k: release[k] for k in from_file} == from_file
    assert dc_ae.release_of(released) == "dc-ae-f128c512"
    assert registry.get_factory("dc-ae-f128c512").release.latent_scale == released["scaling_factor"]


def test_parity_with_the_upstream_code_on_the_in_1_0_layout():
    tokenizer = tokbench.load("dc-ae-f64c128", weights=str(FOLDER))
    assert_latents_parity(tokenizer, X, EXPECTED, (2, 8, 2, 2), tol=TOL)  # f64 on 128 px


def test_the_layout_options_come_from_the_config():
    cfg = tokbench.load("dc-ae-f64c128", weights=str(FOLDER)).config
    assert (cfg["downsample_block_type"], cfg["upsample_block_type"]) == ("pixel_unshuffle", "pixel_shuffle")
    assert cfg["encoder_layers_per_block"][0] == cfg["decoder_layers_per_block"][0] == 0
    assert cfg["decoder_norm_types"][:3] == ["batch_norm"] * 3 and cfg["decoder_act_fns"][:3] == ["relu"] * 3
    assert (cfg["latent_channels"], cfg["attention_head_dim"]) == (8, 8)  # the fixture's, not the release's


def test_folders_are_recognised_by_their_compression(tmp_path):
    tokenizer = tokbench.load(FOLDER)
    assert tokenizer.upstream["name"] == "dc-ae-f64c128"
    assert tokenizer.upstream["diffusion_latents"] == {"shift": 0.0, "scale": 0.2889}
    f128 = tmp_path / "f128"
    f128.mkdir()
    config = json.loads((FOLDER / "config.json").read_text())
    for side in ("encoder", "decoder"):
        config[f"{side}_block_out_channels"] = config[f"{side}_block_out_channels"] + [32]
    (f128 / "config.json").write_text(json.dumps(config))
    assert [n for n in RELEASE_SIZES if registry.get_factory(n).recognizes(f128)] == ["dc-ae-f128c512"]
    assert not registry.get_factory("dc-ae-f32c32").recognizes(f128)


@pytest.mark.skipif(not SHARED_F32.is_dir(), reason=f"adapter fixture not found at {SHARED_F32}")
def test_sana_f32_folders_stay_dc_ae_f32c32():
    assert [n for n in ("dc-ae-f32c32", *RELEASE_SIZES) if registry.get_factory(n).recognizes(SHARED_F32)] \
        == ["dc-ae-f32c32"]


def test_the_config_not_the_name_decides_the_architecture():
    """Loaded by the f128c512 name, the 7-stage folder is still built as its config says."""
    tokenizer = tokbench.load("dc-ae-f128c512", weights=str(FOLDER))
    assert tokenizer.stride == 64 and tokenizer.upstream["name"] == "dc-ae-f128c512"
    assert np.abs(tokenizer.encode(X).latents.numpy() - EXPECTED["latents"]).max() <= TOL


def test_convert_then_load_gives_the_same_latents(tmp_path):
    assert main(["convert", "dc-ae-f64c128", "--weights", str(FOLDER), str(tmp_path / "ckpt")]) == 0
    plain = tokbench.load(tmp_path / "ckpt")
    assert plain.family == "dc_ae"
    assert np.abs(plain.encode(X).latents.numpy() - EXPECTED["latents"]).max() <= TOL


def test_list_shows_both_names(capsys):
    assert main(["list"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["dc-ae-f64c128"][2] == rows["dc-ae-f128c512"][2] == "dc_ae"
    assert rows["dc-ae-f64c128"][5:7] == ["16", "128"]  # 4 x 4 latents of 128 channels at 256 px
    assert rows["dc-ae-f128c512"][5:7] == ["4", "512"]
