"""TiTok's single-stage releases: ``titok-*-vq8k`` (ids) and ``titok-*-vae-c16`` (latents).

Parity with bytedance/1d-tokenizer's own ``TiTok`` class on small fixtures it computed
(``tests/fixtures/make_titok_single_stage_fixture.py``: upstream code, random weights, saved by
upstream's ``save_pretrained`` as the releases are): ids 100% equal, latents and reconstructions
within 1e-4, end to end and decoding upstream's own ids/latents.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import tokbench
from tokbench import CheckpointError, Tokens, registry
from tokbench.cli import main
from tokbench.tokenizers.public import titok
from tokbench.tokenizers.public.titok_model import PatchesToPixels

FIXTURES = Path(__file__).parent / "fixtures" / "titok_single_stage"
VQ, VAE = FIXTURES / "vq", FIXTURES / "vae"
TOL = 1e-4
VQ8K = ("titok-bl128-vq8k", "titok-bl64-vq8k", "titok-sl256-vq8k")
VAE_C16 = ("titok-bl128-vae-c16", "titok-bl64-vae-c16", "titok-ll32-vae-c16")


def _expected(folder: Path) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    expected = dict(np.load(folder / "expected.npz"))
    return expected, torch.from_numpy(expected["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255


def test_vq_parity_with_the_upstream_code():
    expected, x = _expected(VQ)
    tokenizer = tokbench.load("titok-bl64-vq8k", weights=str(VQ))
    tokens = tokenizer.encode(x)
    upstream_ids = expected["indices"][:, 0]  # upstream's (B, 1, K)
    assert tokens.ids.shape == upstream_ids.shape == (2, 16)
    assert (tokens.ids.numpy() == upstream_ids).mean() >= 0.999
    assert np.abs(tokenizer.decode(tokens).numpy() - expected["recon"]).max() <= TOL
    stored = Tokens(tokens.layout, tokens.image_size, ids=torch.from_numpy(upstream_ids))
    assert np.abs(tokenizer.decode(stored).numpy() - expected["recon"]).max() <= TOL


def test_vae_parity_with_the_upstream_code():
    expected, x = _expected(VAE)
    tokenizer = tokbench.load("titok-bl64-vae-c16", weights=str(VAE))
    assert tokenizer.kind == "continuous" and not hasattr(tokenizer, "quantize")
    tokens = tokenizer.encode(x)
    upstream_BKC = expected["latents"][:, :, 0].transpose(0, 2, 1)  # upstream's mean is (B, C, 1, K)
    assert tokens.latents.shape == upstream_BKC.shape == (2, 8, 16)
    assert np.abs(tokens.latents.numpy() - upstream_BKC).max() <= TOL
    assert np.abs(tokenizer.decode(tokens).numpy() - expected["recon"]).max() <= TOL
    stored = Tokens(tokens.layout, tokens.image_size, latents=torch.from_numpy(np.ascontiguousarray(upstream_BKC)))
    assert np.abs(tokenizer.decode(stored).numpy() - expected["recon"]).max() <= TOL


def test_vq8k_searches_the_plain_codebook():
    """use_l2_norm is False: an l2-normalized search (the two-stage releases') picks other codes."""
    expected, x = _expected(VQ)
    tokenizer = tokbench.load("titok-bl64-vq8k", weights=str(VQ))
    assert tokenizer.config["l2_norm"] is False
    z_ND = tokenizer.encoder(x, tokenizer.latent_tokens)[:, :, 0].transpose(1, 2).reshape(-1, 16)
    codes = tokenizer.quantize.embedding
    cosine = (torch.nn.functional.normalize(z_ND, dim=1) @ torch.nn.functional.normalize(codes, dim=1).t()).argmax(1)
    assert (cosine.numpy() == expected["indices"].reshape(-1)).mean() < 0.9
    assert np.array_equal(torch.cdist(z_ND, codes).argmin(1).numpy(), expected["indices"].reshape(-1))


def test_patches_unfold_in_the_release_channel_order():
    """Channel (i * p + j) * 3 + c of patch (h, w) is pixel (c, h * p + i, w * p + j)."""
    p, g = 3, 2
    x = torch.randn(1, p * p * 3, g, g)
    image = PatchesToPixels(p)(x)
    assert image.shape == (1, 3, g * p, g * p)
    for c, h, w, i, j in [(0, 0, 0, 0, 0), (2, 1, 0, 2, 1), (1, 0, 1, 1, 2), (2, 1, 1, 2, 2)]:
        assert image[0, c, h * p + i, w * p + j] == x[0, (i * p + j) * 3 + c, h, w]


def test_fixtures_are_recognised_by_their_kind_only():
    assert [n for n in sorted(titok.RELEASES) if registry_factory(n).recognizes(VQ)] == list(VQ8K)
    assert [n for n in sorted(titok.RELEASES) if registry_factory(n).recognizes(VAE)] == list(VAE_C16)
    with pytest.raises(CheckpointError, match="could be any of " + ", ".join(VQ8K)):
        tokbench.load(VQ)


def registry_factory(name: str):
    return getattr(titok, "build_" + name.removeprefix("titok-").replace("-", "_"))


def _with_vq_model(tmp_path: Path, folder: Path, **changes) -> Path:
    shutil.copytree(folder, tmp_path / "release")
    config = json.loads((folder / "config.json").read_text())
    config["model"]["vq_model"].update(changes)
    (tmp_path / "release" / "config.json").write_text(json.dumps(config))
    return tmp_path / "release"


@pytest.mark.parametrize("changes, name", [
    (dict(num_latent_tokens=128, vit_enc_model_size="base"), "titok-bl128-vq8k"),
    (dict(num_latent_tokens=256, vit_enc_model_size="small"), "titok-sl256-vq8k"),
    (dict(num_latent_tokens=64, vit_enc_model_size="base", finetune_decoder=True, is_legacy=True,
          use_l2_norm=True), "titok-b64"),
])
def test_a_release_config_names_its_release(tmp_path, changes, name):
    release = _with_vq_model(tmp_path, VQ, **changes)
    assert [n for n in titok.RELEASES if registry_factory(n).recognizes(release)] == [name]


def test_another_kind_is_a_one_line_error_naming_the_right_names():
    with pytest.raises(CheckpointError, match="single-stage VAE TiTok, not titok-bl64-vq8k .* one of "
                                              + ", ".join(VAE_C16)) as err:
        tokbench.load("titok-bl64-vq8k", weights=str(VAE))
    assert "\n" not in str(err.value)


def test_a_stage_one_training_state_is_refused(tmp_path):
    release = _with_vq_model(tmp_path, VQ, is_legacy=True)  # proxy-code head without the pixel decoder
    with pytest.raises(CheckpointError, match="finetune_decoder=False with is_legacy=True is not a released TiTok"):
        tokbench.load("titok-bl64-vq8k", weights=str(release))


def test_release_options_are_fixed():
    with pytest.raises(ValueError, match="titok-sl256-vq8k: option codebook_size cannot be changed.*8192"):
        registry.create("titok-sl256-vq8k:codebook_size=4096")
    with pytest.raises(ValueError, match="titok-ll32-vae-c16: option quantize_mode cannot be changed.*'vae'"):
        registry.create("titok-ll32-vae-c16:quantize_mode=vq")


@pytest.mark.parametrize("name, folder", [("titok-bl64-vq8k", VQ), ("titok-ll32-vae-c16", VAE)])
def test_convert_gives_the_same_tokens(tmp_path, name, folder):
    _, x = _expected(folder)
    public = tokbench.load(name, weights=str(folder))
    assert main(["convert", name, "--weights", str(folder), str(tmp_path / "ckpt")]) == 0
    plain = tokbench.load(tmp_path / "ckpt")
    assert plain.family == "titok" and plain.kind == public.kind
    a, b = public.encode(x), plain.encode(x)
    assert torch.equal(a.ids, b.ids) if a.kind == "discrete" else torch.equal(a.latents, b.latents)
    assert torch.equal(public.decode(a), plain.decode(b))
