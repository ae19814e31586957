"""MaskGIT's VQGAN as bytedance/1d-tokenizer releases it (``maskgit-vqgan``: RAR's tokenizer, TiTok's teacher),
loaded from its bare ``.bin`` state dict onto MaskBit's model (the architecture of ``maskgit-tokenizer``).

Parity with 1d-tokenizer's own ``modeling/modules/maskgit_vqgan.py`` on a small fixture it computed
(``tests/fixtures/make_maskgit_vqgan_fixture.py``: random weights saved as the release is, run as
``PretrainedTokenizer.encode`` / ``decode`` run): encoder features, ids, reconstructions end to end
and from upstream's ids; the release-size model's names, read off the upstream modules.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import tokbench
from tokbench import CheckpointError, registry
from tokbench.cli import main
from tokbench.tokenizers.public import maskbit, maskgit_vqgan
from helpers import assert_ids_parity

FIXTURES = Path(__file__).parent / "fixtures" / "maskgit_vqgan"
WEIGHTS = FIXTURES / "maskgit-vqgan-f2-256.bin"
EXPECTED = np.load(FIXTURES / "expected.npz")
X = torch.from_numpy(EXPECTED["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255
MASKBIT_MASKGIT = Path(__file__).parent / "fixtures" / "maskgit_tokenizer" / "maskgit_tokenizer.bin"
TOL = 1e-4


@pytest.fixture(scope="module")
def tokenizer():
    return tokbench.load("maskgit-vqgan", weights=str(WEIGHTS))


def _state() -> dict[str, torch.Tensor]:
    return torch.load(WEIGHTS, map_location="cpu", weights_only=True)


def test_parity_with_the_upstream_code(tokenizer):
    assert EXPECTED["margin"] > 1e-5  # no near tie for a thread count to flip
    assert np.abs(tokenizer.features(X).detach().numpy() - EXPECTED["z"]).max() <= TOL
    assert_ids_parity(tokenizer, X, EXPECTED, (2, 24, 24), tol=TOL)


def test_the_release_size_model_reads_every_upstream_tensor_at_its_shape():
    """The names and shapes of 1d-tokenizer's modules at PretrainedTokenizer's config (written by
    the fixture script from the upstream classes) are exactly what the key map reads."""
    upstream = {k: tuple(v) for k, v in json.loads((FIXTURES / "release_keys.json").read_text()).items()}
    with torch.device("meta"):
        model = registry.create("maskgit-vqgan")
    own = model.state_dict()
    keymap = maskgit_vqgan.keymap_for(model)
    assert keymap.upstream_keys() == set(upstream)
    assert all(tuple(own[e.dst].shape) == upstream[e.srcs[0]] for e in keymap.entries)
    assert model.layout_for(256, 256).num_tokens == 256 and model.layout_for(256, 256).vocab_size == 1024


def test_it_is_maskbits_maskgit_tokenizer_under_other_names(tmp_path, tokenizer):
    """Written in MaskBit's names (its legacy decoder's), the same weights load as ``maskgit-tokenizer``
    and compute the same ids and images; the config is the same release config."""
    assert registry.create("maskgit-vqgan").config == registry.create("maskgit-tokenizer").config
    renamed = maskbit.keymap_for(tokenizer, legacy_decoder=True).to_upstream(tokenizer.state_dict())
    assert set(map(maskgit_vqgan.onedtok_name, renamed)) == set(_state())
    torch.save(renamed, tmp_path / "maskgit_tokenizer.bin")
    as_maskbit = tokbench.load("maskgit-tokenizer", weights=str(tmp_path / "maskgit_tokenizer.bin"))
    assert torch.equal(as_maskbit.encode(X).ids, torch.from_numpy(EXPECTED["indices"]))
    assert np.abs(as_maskbit.reconstruct(X).numpy() - EXPECTED["recon"]).max() <= TOL


def test_files_are_told_apart_by_their_names():
    assert tokbench.load(WEIGHTS).upstream["name"] == "maskgit-vqgan"
    assert tokbench.load(MASKBIT_MASKGIT).upstream["name"] == "maskgit-tokenizer"
    with pytest.raises(CheckpointError, match="MaskBit's names .* load it as maskgit-tokenizer") as err:
        tokbench.load("maskgit-vqgan", weights=str(MASKBIT_MASKGIT))
    assert "\n" not in str(err.value)


def test_a_missing_tensor_is_a_one_line_error_in_upstream_names(tmp_path):
    torch.save({k: v for k, v in _state().items() if k != "encoder.mid.0.conv2.weight"}, tmp_path / "broken.bin")
    with pytest.raises(CheckpointError, match=r"missing keys \[encoder.mid.0.conv2.weight\]") as err:
        tokbench.load("maskgit-vqgan", weights=str(tmp_path / "broken.bin"))
    assert "\n" not in str(err.value)


def test_a_folder_with_the_file_loads_and_sizes_come_from_the_tensors(tokenizer):
    folder = tokbench.load("maskgit-vqgan", weights=str(FIXTURES))
    assert folder.config == tokenizer.config == dict(ch=32, ch_mult=[1, 2], num_res_blocks=1, token_size=16,
                                                     quantizer="vq", codebook_size=256, downsample="avg_pool")
    with pytest.raises(ValueError, match="codebook_size=1024 cannot be changed: the weights .* fix codebook_size=256"):
        tokbench.load("maskgit-vqgan", weights=str(WEIGHTS), codebook_size=1024)


def test_convert_gives_a_plain_maskbit_checkpoint(tmp_path):
    assert main(["convert", "maskgit-vqgan", "--weights", str(WEIGHTS), str(tmp_path / "ckpt")]) == 0
    plain = tokbench.load(tmp_path / "ckpt")
    assert plain.family == "maskbit"
    assert np.array_equal(plain.encode(X).ids.numpy(), EXPECTED["indices"])
    assert np.abs(plain.reconstruct(X).numpy() - EXPECTED["recon"]).max() <= TOL
