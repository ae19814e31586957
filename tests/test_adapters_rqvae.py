"""RQ-VAE (kakaobrain/rq-vae-transformer): taming's conv autoencoder, depth-4 residual quantization
over one shared codebook.

Parity with RQ-VAE's own code on a small fixture it computed (``tests/fixtures/
make_rqvae_fixture.py``: upstream's ``RQVAE`` at a reduced size, random weights, saved as the
trainer saves with its ``config.yaml`` beside): features within 1e-4, codes 100% equal,
reconstructions within 1e-4, end to end and decoding upstream's codes. The ids layout (a
position's depth codes adjacent, depth innermost) is checked against upstream's ``(B, h, w, D)``
codes element by element.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import tokbench
from tokbench import CheckpointError, Tokens
from tokbench.cli import main
from tokbench.tokenizers.public import rqvae

FIXTURES = Path(__file__).parent / "fixtures" / "rqvae"
WEIGHTS = FIXTURES / "model.pt"
EXPECTED = np.load(FIXTURES / "expected.npz")
X = torch.from_numpy(EXPECTED["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255
TOL = 1e-4


@pytest.fixture(scope="module")
def tokenizer():
    return tokbench.load("rqvae-imagenet-8x8x4", weights=str(WEIGHTS))


def _as_sequence(codes_BhwD: np.ndarray) -> np.ndarray:
    """Upstream's codes in tokbench's order, element by element: position (i, j)'s depth d at (i*w + j)*D + d."""
    B, h, w, D = codes_BhwD.shape
    out = np.empty((B, h * w * D), dtype=np.int64)
    for b in range(B):
        for i in range(h):
            for j in range(w):
                for d in range(D):
                    out[b, (i * w + j) * D + d] = codes_BhwD[b, i, j, d]
    return out


def test_parity_with_the_upstream_code(tokenizer):
    assert EXPECTED["margin"] > 1e-5  # every code is decided by more than float rounding
    tokens = tokenizer.encode(X)
    expected_ids = _as_sequence(EXPECTED["codes"])
    assert EXPECTED["codes"].shape == (2, 8, 8, 4) and tokens.ids.shape == (2, 256)
    assert (tokens.ids.numpy() == expected_ids).mean() >= 0.999
    assert all(len(np.unique(EXPECTED["codes"][..., d])) > 10 for d in range(4))  # many codes at every depth
    assert np.abs(tokenizer.decode(tokens).numpy() - EXPECTED["recon"]).max() <= TOL
    stored = Tokens(tokens.layout, tokens.image_size, ids=torch.from_numpy(expected_ids))
    assert np.abs(tokenizer.decode(stored).numpy() - EXPECTED["recon"]).max() <= TOL


def test_features_and_codes_match_upstream(tokenizer):
    with torch.no_grad():
        f = tokenizer.features(X).permute(0, 2, 3, 1)
        codes = tokenizer.codes(X)
    assert f.shape == EXPECTED["features"].shape == (2, 8, 8, 32)
    assert np.abs(f.numpy() - EXPECTED["features"]).max() <= TOL
    assert np.array_equal(codes.numpy(), EXPECTED["codes"])


def test_each_depth_quantizes_what_the_previous_depths_left():
    """Against a brute-force residual search written out here: the sum of the chosen codes."""
    torch.manual_seed(0)
    quantizer = rqvae.RQVAETokenizer(ch=32, ch_mult=(1, 1), num_res_blocks=1, z_channels=32, attn_levels=(),
                                     codebook_size=16, code_dim=3, depth=3).quantize
    with torch.no_grad():
        quantizer.vq.embedding.copy_(torch.randn(16, 3))
    z = torch.randn(50, 3)
    ids = quantizer.ids(z)
    book = quantizer.vq.embedding.detach()
    residual = z.clone()
    for d in range(3):
        nearest = ((residual[:, None] - book[None]) ** 2).sum(-1).argmin(dim=1)
        assert torch.equal(ids[:, d], nearest)
        residual = residual - book[nearest]
    assert torch.allclose(quantizer.lookup(ids), z - residual, atol=1e-6)
    # deeper codes reduce the error on average (the point of residual quantization)
    errors = [(z - quantizer.lookup(ids[:, :k + 1])).norm(dim=1).mean() for k in range(3)]
    assert errors[0] > errors[1] > errors[2]


def test_layout_is_a_sequence_with_depth_innermost_and_exact_bits(tokenizer):
    layout = tokenizer.encode(X).layout
    assert (layout.arrangement, layout.shape, layout.vocab_size) == ("sequence", (256,), 64)
    assert layout.bits_per_image == 8 * 8 * 4 * math.log2(64)
    with torch.device("meta"):
        release = rqvae.build_imagenet()  # release size, no weights
    big = release.layout_for(256, 256)
    assert (big.num_tokens, big.vocab_size, big.bits_per_image) == (256, 16384, 8 * 8 * 4 * 14)


def test_non_square_images_and_malformed_ids(tokenizer):
    x = torch.rand(1, 3, 32, 48)
    tokens = tokenizer.encode(x)
    assert tokens.ids.shape == (1, 8 * 12 * 4)
    assert tokenizer.decode(tokens).shape == (1, 3, 32, 48)
    bad = Tokens(tokens.layout, tokens.image_size, ids=tokens.ids[:, :100])
    with pytest.raises(ValueError, match=r"4 ids per position of the 8x12 grid of a 32x48 image \(384 ids\); got 100"):
        tokenizer.decode(bad)
    out_of_range = Tokens(tokens.layout, tokens.image_size, ids=tokens.ids + 64)
    with pytest.raises(ValueError, match=r"a codebook of 64 codes \(0..63\); got ids in"):
        tokenizer.decode(out_of_range)
    with pytest.raises(ValueError, match="depth must be >= 1, got 0"):
        rqvae.RQVAETokenizer(ch=32, ch_mult=(1, 1), num_res_blocks=1, z_channels=32, attn_levels=(), depth=0)


def test_the_file_options_come_from_config_yaml_or_the_tensors(tokenizer, tmp_path):
    expected = dict(ch=32, ch_mult=[1, 1, 1], num_res_blocks=1, z_channels=32, attn_levels=[2], codebook_size=64,
                    code_dim=32, depth=4)
    assert tokenizer.config == expected
    (tmp_path / "model.pt").write_bytes(WEIGHTS.read_bytes())  # without its config.yaml
    alone = tokbench.load("rqvae-imagenet-8x8x4", weights=str(tmp_path / "model.pt"))
    assert alone.config == expected
    assert np.array_equal(alone.codes(X).numpy(), EXPECTED["codes"])


def _blob() -> dict:
    return torch.load(WEIGHTS, map_location="cpu", weights_only=False)  # our own fixture, written by the generator


def _config() -> dict:
    return yaml.safe_load((FIXTURES / "config.yaml").read_text())


def test_codebook_copies_and_ema_statistics_are_ignored_but_other_keys_are_not(tmp_path):
    state = _blob()["state_dict"]
    assert "quantizer.codebooks.3.weight" in state and "quantizer.codebooks.0.embed_ema" in state
    assert state["quantizer.codebooks.0.weight"].shape == (65, 32)  # n_embed + a padding row
    missing = {k: v for k, v in state.items() if k != "decoder.conv_out.bias"}
    torch.save({"state_dict": missing}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"missing keys \[decoder.conv_out.bias\]") as err:
        tokbench.load("rqvae-imagenet-8x8x4", weights=str(tmp_path / "model.pt"))
    assert "\n" not in str(err.value)
    unshared = dict(state, **{"quantizer.codebooks.2.weight": torch.zeros(65, 32)})
    torch.save({"state_dict": unshared}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="codebooks.2.weight differs from .*codebooks.0.weight; only RQ-VAEs "
                                              "with a shared codebook"):
        tokbench.load("rqvae-imagenet-8x8x4", weights=str(tmp_path / "model.pt"))


def test_unsupported_configs_are_one_line_errors(tmp_path):
    torch.save(_blob(), tmp_path / "model.pt")
    config = _config()
    config["arch"]["hparams"]["shared_codebook"] = False
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(CheckpointError, match="only the released RQ-VAE variant.*shared_codebook=False"):
        tokbench.load("rqvae-imagenet-8x8x4", weights=str(tmp_path / "model.pt"))
    (tmp_path / "config.yaml").write_text("arch: {hparams: {}}\n")
    with pytest.raises(CheckpointError, match="not an RQ-VAE stage-1 config.yaml"):
        tokbench.load("rqvae-imagenet-8x8x4", weights=str(tmp_path / "model.pt"))


def test_release_options_the_weights_fix_cannot_be_overridden():
    with pytest.raises(ValueError, match="option depth cannot be changed"):
        rqvae.build_imagenet(depth=8)
    with pytest.raises(ValueError, match="option codebook_size=128 cannot be changed: the weights .* fix "
                                         "codebook_size=64"):
        rqvae.build_imagenet(weights=str(WEIGHTS), codebook_size=128)


def test_convert_then_load_as_a_plain_checkpoint(tmp_path, tokenizer):
    assert main(["convert", "rqvae-imagenet-8x8x4", "--weights", str(WEIGHTS), str(tmp_path / "ckpt")]) == 0
    plain = tokbench.load(tmp_path / "ckpt")
    assert plain.family == "rqvae" and plain.config == tokenizer.config
    assert np.array_equal(plain.encode(X).ids.numpy(), _as_sequence(EXPECTED["codes"]))
    assert not plain.trainable  # inference only: upstream's EMA training is not reproduced


def test_the_release_file_alone_names_rqvae_by_its_codebook_size(tmp_path):
    # 64 codes: neither release's size, so both names fit and the caller must choose ...
    with pytest.raises(CheckpointError, match="could be any of rqvae-ffhq-8x8x4, rqvae-imagenet-8x8x4; name it"):
        tokbench.load(str(WEIGHTS))
    assert rqvae.build_imagenet.recognizes(WEIGHTS) and rqvae.build_ffhq.recognizes(WEIGHTS)
    state = _blob()["state_dict"]
    book = torch.randn(2049, 32)
    torch.save({"state_dict": {**state, **{f"quantizer.codebooks.{d}.weight": book for d in range(4)}}},
               tmp_path / "ffhq.pt")  # ... a 2,048-code file fits the FFHQ release alone
    assert rqvae.build_ffhq.recognizes(tmp_path / "ffhq.pt")
    assert not rqvae.build_imagenet.recognizes(tmp_path / "ffhq.pt")
    by_path = tokbench.load(str(tmp_path / "ffhq.pt"))
    assert by_path.upstream["name"] == "rqvae-ffhq-8x8x4" and by_path.config["codebook_size"] == 2048
    assert torch.equal(by_path.quantize.vq.embedding.detach(), book[:-1])


def test_info_and_the_generation_probe_see_the_one_shared_codebook(tokenizer, capsys):
    from tokbench.generation.probe import token_features

    assert main(["info", "rqvae-imagenet-8x8x4", "--weights", str(WEIGHTS)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layout@256"] == "16384 tokens (1D sequence of 16384), vocab 64"  # 64 x 64 positions x depth 4
    ids = tokenizer.encode(X).ids
    book = tokenizer.quantize.vq.embedding.detach()
    assert np.allclose(token_features(tokenizer, ids), book[ids].mean(1).numpy(), atol=1e-6)


def test_the_stage1_folder_loads_like_its_model_file_and_other_files_are_not_rqvae(tmp_path):
    from tokbench.checkpoint import public_candidates

    folder = tokbench.load("rqvae-imagenet-8x8x4", weights=str(FIXTURES))
    assert np.array_equal(folder.codes(X).numpy(), EXPECTED["codes"])
    assert set(public_candidates(FIXTURES)) == {"rqvae-imagenet-8x8x4", "rqvae-ffhq-8x8x4"}
    with pytest.raises(CheckpointError, match="a folder without model.pt"):
        tokbench.load("rqvae-imagenet-8x8x4", weights=str(tmp_path))
    taming_like = Path(__file__).parent / "fixtures" / "chameleon_vqgan" / "vqgan.ckpt"
    assert taming_like.is_file() and not rqvae.build_imagenet.recognizes(taming_like)
    assert not rqvae.build_imagenet.recognizes(tmp_path)
