"""MaskBit (markweberdev/maskbit): VQGAN+ with lookup-free bits (``maskbit-*``) or a codebook
(``vqgan-plus-*``), and MaskGIT's tokenizer as MaskBit re-released it (``maskgit-tokenizer``),
loaded from their bare ``.bin`` state dicts.

Parity with MaskBit's own ``ConvVQModel`` on small fixtures it computed (``tests/fixtures/
make_maskbit_fixture.py``: random weights saved with ``torch.save(state_dict)`` as the releases are;
LFQ of 10 bits with widths that change in one encoder and one decoder level; VQGAN+'s
``SimpleVectorizer`` with 256 codes; MaskGIT's with average pooling and the legacy decoder's stage
numbering): encoder features, ids, reconstructions end to end and from upstream's ids.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tokbench
from tokbench import CheckpointError, Tokens
from tokbench.cli import main
from tokbench.tokenizers.public.maskbit import BITS_KEY, CODEBOOK_KEY, keymap_for
from helpers import assert_ids_parity

FIXTURES = Path(__file__).parent / "fixtures"
WEIGHTS = FIXTURES / "maskbit" / "maskbit_tokenizer_10bit.bin"
EXPECTED = np.load(WEIGHTS.parent / "expected.npz")
X = torch.from_numpy(EXPECTED["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255
VQ_WEIGHTS = FIXTURES / "vqgan_plus" / "vqgan_plus_8bit.bin"
VQ_EXPECTED = np.load(VQ_WEIGHTS.parent / "expected.npz")
MASKGIT_WEIGHTS = FIXTURES / "maskgit_tokenizer" / "maskgit_tokenizer.bin"
TOL = 1e-4


@pytest.fixture(scope="module")
def tokenizer():
    return tokbench.load("maskbit-10bit", weights=str(WEIGHTS))


def _state() -> dict[str, torch.Tensor]:
    return torch.load(WEIGHTS, map_location="cpu", weights_only=True)


def test_parity_with_the_upstream_code(tokenizer):
    assert np.abs(tokenizer.features(X).detach().numpy() - EXPECTED["z"]).max() <= TOL
    assert_ids_parity(tokenizer, X, EXPECTED, (2, 24, 24), from_ids="recon_from_ids", tol=TOL)


def test_ids_put_channel_0_in_the_least_significant_bit(tokenizer):
    """Upstream's ids are sum_c [z_c > 0] * 2**c of the encoder features (computed here from the
    features upstream saved), the layout Open-MAGVIT2 computes too; zero counts as negative."""
    z = torch.from_numpy(EXPECTED["z"])
    by_formula = ((z > 0).long() * (2 ** torch.arange(10))[None, :, None, None]).sum(1)
    assert torch.equal(by_formula, torch.from_numpy(EXPECTED["indices"]))
    one_hot = torch.zeros(1, 10, 1, 3)
    one_hot[0, 0, 0, 1] = one_hot[0, 9, 0, 2] = 1.0
    assert tokenizer.quantize(one_hot).ids.flatten().tolist() == [0, 1, 512]


def test_released_files_are_recognised_by_their_bits(tmp_path):
    assert tokbench.load(WEIGHTS).upstream["name"] == "maskbit-10bit"
    state = _state()
    for bits, expect in ((16, "maskbit-16bit"), (11, None)):
        widened = dict(state)
        widened["encoder.conv_out.weight"] = torch.randn(bits, 64, 1, 1)
        widened["encoder.conv_out.bias"] = torch.randn(bits)
        widened["decoder.conv_in.weight"] = torch.randn(64, bits, 3, 3)
        widened[BITS_KEY] = (2 ** torch.arange(bits)).int()
        widened[CODEBOOK_KEY] = ((torch.arange(2 ** bits)[:, None] >> torch.arange(bits)) & 1).float() * 2 - 1
        path = tmp_path / f"maskbit_tokenizer_{bits}bit.bin"
        torch.save(widened, path)
        if expect:
            loaded = tokbench.load(path)
            assert loaded.upstream["name"] == expect and loaded.layout_for(48, 48).vocab_size == 2 ** 16
        else:  # no release has 11 bits: every MaskBit name fits, the caller must choose
            with pytest.raises(CheckpointError, match="could be any of maskbit-10bit, maskbit-12bit"):
                tokbench.load(path)


def test_a_file_with_another_bit_order_is_refused(tmp_path):
    state = _state()
    state[BITS_KEY] = state[BITS_KEY].flip(0)  # most significant bit first
    state[CODEBOOK_KEY] = state[CODEBOOK_KEY].flip(1)
    torch.save(state, tmp_path / "msb_first.bin")
    with pytest.raises(CheckpointError, match="channel 0 the least significant bit") as err:
        tokbench.load("maskbit-10bit", weights=str(tmp_path / "msb_first.bin"))
    assert "\n" not in str(err.value)


def test_a_missing_tensor_is_a_one_line_error(tmp_path):
    state = {k: v for k, v in _state().items() if "upsample_conv" not in k}
    torch.save(state, tmp_path / "broken.bin")
    with pytest.raises(CheckpointError, match=r"missing keys \[decoder.up.0.upsample_conv.bias") as err:
        tokbench.load("maskbit-10bit", weights=str(tmp_path / "broken.bin"))
    assert "\n" not in str(err.value)


def test_a_folder_with_the_file_loads_and_sizes_come_from_the_tensors(tokenizer):
    folder = tokbench.load("maskbit-18bit", weights=str(WEIGHTS.parent))
    assert folder.config == tokenizer.config == dict(ch=32, ch_mult=[1, 2], num_res_blocks=1, token_size=10,
                                                     quantizer="lfq", codebook_size=None, downsample="conv")
    with pytest.raises(ValueError, match="token_size=18 cannot be changed: the weights .* fix token_size=10"):
        tokbench.load("maskbit-18bit", weights=str(WEIGHTS), token_size=18)


def test_convert_gives_a_plain_maskbit_checkpoint(tmp_path):
    assert main(["convert", "maskbit-10bit", "--weights", str(WEIGHTS), str(tmp_path / "ckpt")]) == 0
    plain = tokbench.load(tmp_path / "ckpt")
    assert plain.family == "maskbit"
    assert np.array_equal(plain.encode(X).ids.numpy(), EXPECTED["indices"])
    assert np.abs(plain.reconstruct(X).numpy() - EXPECTED["recon"]).max() <= TOL


def test_released_weights_fine_tune_with_lfq_losses(tokenizer):
    model = tokbench.load("maskbit-10bit", weights=str(WEIGHTS)).train()
    out = model.autoencode(X[:1])
    assert set(out.losses) == {"commitment", "entropy"}
    ((out.reconstruction - X[:1]).pow(2).mean() + sum(out.losses.values())).backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    assert model.decoder.conv_out.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name,weights,downsample", [("vqgan-plus-10bit", VQ_WEIGHTS, "conv"),
                                                     ("maskgit-tokenizer", MASKGIT_WEIGHTS, "avg_pool")])
def test_codebook_variants_parity_with_the_upstream_code(name, weights, downsample):
    expected = np.load(weights.parent / "expected.npz")
    tokenizer = tokbench.load(name, weights=str(weights))
    assert tokenizer.config["quantizer"] == "vq" and tokenizer.layout_for(48, 48).vocab_size == 256
    assert tokenizer.config["downsample"] == downsample
    tokens = tokenizer.encode(X)
    assert tokens.ids.shape == expected["indices"].shape == (2, 24, 24)
    assert (tokens.ids.numpy() == expected["indices"]).mean() >= 0.999
    assert np.abs(tokenizer.decode(tokens).numpy() - expected["recon"]).max() <= TOL
    stored = Tokens(tokens.layout, tokens.image_size, ids=torch.from_numpy(expected["indices"]))
    assert np.abs(tokenizer.decode(stored).numpy() - expected["recon_from_ids"]).max() <= TOL


def test_the_legacy_decoder_numbers_its_stages_by_level():
    """MaskGIT's file: ``decoder.up.1`` (the lowest resolution of two levels) upsamples, as it is
    the first stage run; read in the current numbering the keys do not fit."""
    state = torch.load(MASKGIT_WEIGHTS, map_location="cpu", weights_only=True)
    assert "decoder.up.1.upsample_conv.weight" in state and "decoder.up.0.upsample_conv.weight" not in state
    model = tokbench.load("maskgit-tokenizer", weights=str(MASKGIT_WEIGHTS))
    assert torch.equal(model.decoder.up[0].upsample_conv.conv.weight, state["decoder.up.1.upsample_conv.weight"])
    with pytest.raises(CheckpointError, match="missing keys.*decoder.up.0.upsample_conv"):
        keymap_for(model).apply(state, "current numbering")


def test_vqgan_plus_files_are_told_from_maskbit_files_and_by_codebook_size(tmp_path):
    with pytest.raises(CheckpointError, match="could be any of vqgan-plus-10bit, vqgan-plus-12bit; name it"):
        tokbench.load(VQ_WEIGHTS)  # 256 codes: no release's size; not LFQ, no average pooling
    assert tokbench.load(MASKGIT_WEIGHTS).upstream["name"] == "maskgit-tokenizer"  # pooling tells it apart
    state = torch.load(VQ_WEIGHTS, map_location="cpu", weights_only=True)
    state["quantize.embedding.weight"] = torch.randn(4096, 16)
    torch.save(state, tmp_path / "vqgan_plus_12bit.bin")
    assert tokbench.load(tmp_path / "vqgan_plus_12bit.bin").upstream["name"] == "vqgan-plus-12bit"
