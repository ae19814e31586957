"""UniTok (FoundationVision/UniTok ``models/unitok.py``): ViTamin encoder, 8 cosine codebooks, ViT decoder.

Parity with UniTok's own code on a small fixture it computed (``tests/fixtures/
make_unitok_fixture.py``: upstream's ``UniTok`` at a reduced ViTamin size, random weights, saved
as upstream's training loop saves, ``args`` included): ids 100% equal, the quantizer's input
and reconstructions within 1e-4, end to end and decoding upstream's ids. The ids layout (each
position's codebook ids adjacent, codebook innermost) is checked against upstream's
``(B, num_codebooks, h*w)`` array element by element.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import tokbench
from tokbench import CheckpointError, Tokens
from tokbench.cli import main
from tokbench.nn.family import to_model_range
from tokbench.tokenizers.public import unitok

FIXTURES = Path(__file__).parent / "fixtures" / "unitok"
WEIGHTS = FIXTURES / "unitok_nano64.pth"
EXPECTED = np.load(FIXTURES / "expected.npz")
X = torch.from_numpy(EXPECTED["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255
TOL = 1e-4


@pytest.fixture(scope="module")
def tokenizer():
    return tokbench.load("unitok-large", weights=str(WEIGHTS))


def _as_sequence(upstream_BML: np.ndarray) -> np.ndarray:
    """Upstream's ids in tokbench's order, element by element: position p's codebook m at p*M + m."""
    B, M, L = upstream_BML.shape
    out = np.empty((B, L * M), dtype=np.int64)
    for b in range(B):
        for p in range(L):
            for m in range(M):
                out[b, p * M + m] = upstream_BML[b, m, p]
    return out


def test_parity_with_the_upstream_code(tokenizer):
    assert EXPECTED["margin"] > 1e-4  # every id is decided by more than float rounding
    tokens = tokenizer.encode(X)
    expected_ids = _as_sequence(EXPECTED["indices"])
    assert EXPECTED["indices"].shape == (2, 8, 16) and tokens.ids.shape == (2, 128)
    assert (tokens.ids.numpy() == expected_ids).mean() >= 0.999
    assert all(len(np.unique(EXPECTED["indices"][:, m])) > 3 for m in range(8))  # codes in use in every codebook
    assert np.abs(tokenizer.decode(tokens).numpy() - EXPECTED["recon"]).max() <= TOL
    stored = Tokens(tokens.layout, tokens.image_size, ids=torch.from_numpy(expected_ids))
    assert np.abs(tokenizer.decode(stored).numpy() - EXPECTED["recon"]).max() <= TOL


def test_upstream_ids_and_the_quantizer_input_match(tokenizer):
    with torch.no_grad():
        z = tokenizer.quant_proj(tokenizer.encoder(to_model_range(X)))
        ids = tokenizer.upstream_ids(X)
    assert z.shape == EXPECTED["features"].shape == (2, 16, 32)
    assert np.abs(z.numpy() - EXPECTED["features"]).max() <= TOL
    assert np.array_equal(ids.numpy(), EXPECTED["indices"])


def test_layout_is_a_sequence_of_sub_ids_with_exact_bits(tokenizer):
    layout = tokenizer.encode(X).layout
    assert (layout.arrangement, layout.shape, layout.vocab_size) == ("sequence", (128,), 64)
    assert layout.bits_per_image == 4 * 4 * 8 * math.log2(64)  # 16 positions x 8 codebooks x 6 bits
    with torch.device("meta"):
        release = unitok.build_large()  # release size, no weights
    big = release.layout_for(256, 256)
    assert (big.num_tokens, big.vocab_size, big.bits_per_image) == (2048, 4096, 256 * 8 * 12)


def test_each_codebook_reads_only_its_own_channel_slice(tokenizer):
    quantizer = tokenizer.quantizer
    z = torch.randn(1, 5, 32)
    base = quantizer.ids(z)
    z2 = z.clone()
    z2[..., 12:16] = torch.randn(1, 5, 4)  # codebook 3's slice only
    changed = quantizer.ids(z2) != base
    assert not changed[..., [0, 1, 2, 4, 5, 6, 7]].any()
    # each slice's id is the largest cosine against its own normalised codebook
    book = torch.nn.functional.normalize(quantizer.codebooks[3].embedding, dim=1)
    cos = torch.nn.functional.normalize(z2[0, :, 12:16], dim=1) @ book.t()
    assert torch.equal(quantizer.ids(z2)[0, :, 3], cos.argmax(dim=1))


def test_the_file_options_are_read_off_the_tensors(tokenizer):
    assert tokenizer.config == dict(stem=8, dims=[8, 16], depths=[1, 2], width=64, depth=2, heads=16,
                                    dec_dims=[16, 8], dec_depths=[4, 2], vocab_size=512, vocab_width=32,
                                    num_codebooks=8)


def _blob() -> dict:
    return torch.load(WEIGHTS, map_location="cpu", weights_only=False)  # our own fixture, written by the generator


def test_only_the_clip_half_and_statistics_are_ignored(tmp_path):
    blob = _blob()
    state = blob["trainer"]["unitok"]
    assert any(k.startswith("text_encoder.") for k in state) and "logit_scale" in state
    assert "quantizer.codebooks.0.vocab_usage" in state
    missing = {k: v for k, v in state.items() if k != "decoder.up_conv4.conv2.bias"}
    torch.save({**blob, "trainer": {"unitok": missing}}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \[decoder.up_conv4.conv2.bias\]") as err:
        tokbench.load("unitok-large", weights=str(tmp_path / "missing.pth"))
    assert "\n" not in str(err.value)
    extra = {**state, "encoder.reg_token": torch.zeros(1, 4, 64)}
    torch.save({"trainer": {"unitok": extra}}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys \[encoder.reg_token\]"):
        tokbench.load("unitok-large", weights=str(tmp_path / "extra.pth"))


def test_unsupported_variants_and_other_files_are_one_line_errors(tmp_path):
    blob = _blob()
    torch.save({**blob, "args": {**blob["args"], "quant_proj": "linear"}}, tmp_path / "linear.pth")
    with pytest.raises(CheckpointError, match="quant_proj='linear'.*only the released"):
        tokbench.load("unitok-large", weights=str(tmp_path / "linear.pth"))
    torch.save({**blob, "args": {**blob["args"], "model": "vitamin_huge"}}, tmp_path / "huge.pth")
    with pytest.raises(CheckpointError, match="model='vitamin_huge' is none of upstream's ViTamin sizes"):
        tokbench.load("unitok-large", weights=str(tmp_path / "huge.pth"))
    torch.save({"model": blob["trainer"]["unitok"]}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"not a UniTok checkpoint \(expected \['trainer'\]\['unitok'\]"):
        tokbench.load("unitok-large", weights=str(tmp_path / "other.pth"))
    assert unitok.recognizes(WEIGHTS) and not unitok.recognizes(tmp_path / "other.pth")


def test_release_options_the_weights_fix_cannot_be_overridden():
    with pytest.raises(ValueError, match="option num_codebooks cannot be changed"):
        unitok.build_large(num_codebooks=4)


def test_non_square_images_and_malformed_ids_are_refused(tokenizer):
    with pytest.raises(ValueError, match="square grid; got 64x128"):
        tokenizer.encode(torch.rand(1, 3, 64, 128))
    tokens = tokenizer.encode(X)
    bad = Tokens(tokens.layout, tokens.image_size, ids=tokens.ids[:, :120])
    with pytest.raises(ValueError, match="8 ids per position of a square grid; 120 ids"):
        tokenizer.decode(bad)


def test_convert_then_load_as_a_plain_checkpoint(tmp_path, tokenizer):
    assert main(["convert", "unitok-large", "--weights", str(WEIGHTS), str(tmp_path / "ckpt")]) == 0
    plain = tokbench.load(tmp_path / "ckpt")
    assert plain.family == "unitok" and plain.config == tokenizer.config
    assert np.array_equal(plain.encode(X).ids.numpy(), _as_sequence(EXPECTED["indices"]))


def test_the_release_file_alone_names_unitok():
    by_path = tokbench.load(str(WEIGHTS))
    assert by_path.upstream["name"] == "unitok-large"
    assert np.array_equal(by_path.upstream_ids(X).numpy(), EXPECTED["indices"])
