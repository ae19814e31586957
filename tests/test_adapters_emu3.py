"""Emu3's vision tokenizer (``emu3-vq``): its own ``emu3`` class, loaded from the Hugging Face folder.

Parity with Emu3's own code on a small fixture it computed (``tests/fixtures/make_emu3_fixture.py``:
upstream's ``Emu3VisionVQModel`` and image processor, random weights with redrawn norm parameters and
BatchNorm statistics, saved by ``save_pretrained`` as the release is): an image is encoded as a clip
of four copies and decoded as the clip's first frame; pre-quantization features and reconstructions
within 1e-4 and ids 100% equal, end to end and from upstream's ids.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import tokbench
from tokbench import CheckpointError
from tokbench.cli import main
from tokbench.tokenizers.public.emu3_model import CausalConv3d, Emu3Tokenizer
from helpers import assert_ids_parity

FIXTURE = Path(__file__).parent / "fixtures" / "emu3"
EXPECTED = np.load(FIXTURE / "expected.npz")
X = torch.from_numpy(EXPECTED["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255
TOL = 1e-4


@pytest.fixture(scope="module")
def tokenizer() -> Emu3Tokenizer:
    return tokbench.load("emu3-vq", weights=str(FIXTURE))


def test_parity_with_the_upstream_code(tokenizer):
    assert np.abs(tokenizer.features(X).detach().numpy() - EXPECTED["features"]).max() <= TOL
    assert_ids_parity(tokenizer, X, EXPECTED, (2, 12, 12), tol=TOL)


def test_a_still_image_is_encoded_as_a_clip_of_copies(tokenizer):
    """The temporal convs see four identical frames: a clip of one frame and three black ones
    (what a single frame padded in time would be) gives other features."""
    with torch.no_grad():
        z_BChw = tokenizer.encoder(X * 2 - 1)
        clip = torch.zeros(*z_BChw.shape[:2], tokenizer.frames, *z_BChw.shape[2:])
        clip[:, :, 0] = z_BChw
        padded = tokenizer.quant_conv(tokenizer.encoder_time(clip))[:, :, 0]
        assert padded.shape == tokenizer.features(X).shape
        assert (tokenizer.quantize(padded).ids.numpy() == EXPECTED["indices"]).mean() < 0.9


def test_causal_conv_pads_two_frames_in_front_only():
    conv = CausalConv3d(1, 1, (4, 3, 3), (2, 1, 1))
    with torch.no_grad():
        conv.conv.weight.zero_()
        conv.conv.weight[0, 0, :, 1, 1] = torch.tensor([1.0, 10.0, 100.0, 1000.0])  # one weight per frame offset
        conv.conv.bias.zero_()
    frames = torch.arange(1.0, 5.0).reshape(1, 1, 4, 1, 1).expand(1, 1, 4, 2, 2)  # frames 1, 2, 3, 4
    out = conv(frames)
    # Windows over [0, 0, 1, 2, 3, 4] at stride 2: (0, 0, 1, 2) and (1, 2, 3, 4).
    assert out.shape == (1, 1, 2, 2, 2)
    assert out[0, 0, :, 0, 0].tolist() == [100 * 1 + 1000 * 2, 1 * 1 + 10 * 2 + 100 * 3 + 1000 * 4]


def test_the_release_folder_and_file_are_recognised():
    assert tokbench.load(FIXTURE).upstream["name"] == "emu3-vq"
    by_file = tokbench.load(FIXTURE / "model.safetensors")
    assert np.array_equal(by_file.encode(X).ids.numpy(), EXPECTED["indices"])


def test_convert_keeps_the_outputs(tmp_path):
    assert main(["convert", "emu3-vq", "--weights", str(FIXTURE), str(tmp_path / "ckpt")]) == 0
    plain = tokbench.load(tmp_path / "ckpt")
    assert plain.family == "emu3" and plain.config["attn_levels"] == [2]
    assert np.array_equal(plain.encode(X).ids.numpy(), EXPECTED["indices"])
    assert np.abs(plain.reconstruct(X).numpy() - EXPECTED["recon"]).max() <= TOL


def _copy(tmp_path: Path, **config_changes) -> Path:
    folder = tmp_path / "release"
    shutil.copytree(FIXTURE, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **config_changes}))
    return folder


def test_other_configs_are_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="model_type 'Emu3', expected 'Emu3VisionVQ'"):
        tokbench.load("emu3-vq", weights=str(_copy(tmp_path, model_type="Emu3")))
    shutil.rmtree(tmp_path / "release")
    with pytest.raises(CheckpointError, match="double_z=false") as err:
        tokbench.load("emu3-vq", weights=str(_copy(tmp_path, double_z=True)))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="codebook_size=32768 cannot be changed: the weights .* fix codebook_size=512"):
        tokbench.load("emu3-vq", weights=str(FIXTURE), codebook_size=32768)
    with pytest.raises(CheckpointError, match="a folder with config.json and model.safetensors"):
        tokbench.load("emu3-vq", weights=str(tmp_path / "nowhere"))


def test_a_missing_tensor_is_named_in_upstream_terms(tmp_path):
    folder = _copy(tmp_path)
    state = load_file(folder / "model.safetensors")
    del state["decoder.up.1.block.0.norm1.conv_y.weight"], state["encoder.time_res_stack.0.norm2.running_var"]
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="missing keys .*decoder.up.1.block.0.norm1.conv_y.weight.*"
                                              "encoder.time_res_stack.0.norm2.running_var") as err:
        tokbench.load("emu3-vq", weights=str(folder))
    assert "\n" not in str(err.value)


def test_options_it_cannot_build_are_refused():
    with pytest.raises(ValueError, match="embed_dim must equal z_channels, got 8 and 4"):
        Emu3Tokenizer(ch=32, ch_mult=(1,), embed_dim=8, z_channels=4, attn_levels=(0,))
    with pytest.raises(ValueError, match="temporal_downsample_factor must be a power of 2, got 3"):
        Emu3Tokenizer(ch=32, ch_mult=(1,), attn_levels=(0,), temporal_downsample_factor=3)
