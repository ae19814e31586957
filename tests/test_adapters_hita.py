"""Hita (CVMI-Lab/Hita): holistic + patch tokens, loaded from the released container.

Parity with Hita's own ``VQModel`` on small fixtures it computed (``tests/fixtures/
make_hita_fixture.py``: upstream code, random weights, ``torch.save({"model": state_dict})`` with
the frozen DINOv2 inside): ids 100% equal, reconstructions within 1e-4, end to end and decoding
the upstream ids, for Hita-V (``hita-vqgan``) and Hita-U (``hita-vqgan-ultra``). The fixtures'
head counts and SwiGLU width are not visible in any tensor shape; they are passed as options.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tokbench
from tokbench import CheckpointError, Tokens, registry
from tokbench.cli import main
from tokbench.tokenizers.public import hita

FIXTURES = Path(__file__).parent / "fixtures" / "hita"
SMALL = dict(heads=2, head_dim=16, mlp_dim=64, dino_heads=2)  # the fixture's (see its generator)
SPEC = ",".join(f"{k}={v}" for k, v in SMALL.items())
CASES = {"hita-vqgan": "vanilla", "hita-vqgan-ultra": "ultra"}
TOL = 1e-4


def _case(name: str) -> tuple[Path, dict[str, np.ndarray], torch.Tensor, np.ndarray]:
    expected = dict(np.load(FIXTURES / f"expected_{CASES[name]}.npz"))
    x = torch.from_numpy(expected["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255
    ids = np.concatenate([expected["slot_ids"], expected["patch_ids"].reshape(2, -1)], axis=1)
    return FIXTURES / f"hita-{CASES[name]}.pt", expected, x, ids


@pytest.mark.parametrize("name", list(CASES))
def test_parity_with_the_upstream_code(name):
    weights, expected, x, upstream_ids = _case(name)
    tokenizer = tokbench.load(name, weights=str(weights), **SMALL)
    assert float(expected["margin"]) > 1e-5  # no near-ties: equal ids are a real check
    tokens = tokenizer.encode(x)
    assert tokens.ids.shape == upstream_ids.shape == (2, 8 + 16 * 16)
    assert (tokens.ids.numpy() == upstream_ids).mean() >= 0.999
    with torch.no_grad():
        raw = tokenizer.decode_padded(tokens).numpy()
    assert np.abs(raw - expected["recon"]).max() <= TOL
    assert np.abs(tokenizer.decode(tokens).numpy() - np.clip(expected["recon"], 0, 1)).max() <= TOL
    stored = Tokens(tokens.layout, tokens.image_size, ids=torch.from_numpy(upstream_ids))
    assert np.abs(tokenizer.decode(stored).numpy() - np.clip(expected["recon"], 0, 1)).max() <= TOL


@pytest.mark.parametrize("name", list(CASES))
def test_dino_branch_at_the_release_size_matches_upstream(name):
    """At 336 px the resize to DINO's 224 shrinks (kornia blurs first); the 32 px parity images do not."""
    weights, expected, *_ = _case(name)
    tokenizer = tokbench.load(name, weights=str(weights), **SMALL)
    x = torch.from_numpy(expected["dino_input_uint8"]).permute(0, 3, 1, 2).float() / 255 * 2 - 1
    tokens = tokenizer.encode_transformer.dino_features(x).numpy()
    assert tokens.shape == expected["dino_tokens"].shape == (1, 1 + 16 * 16, 32)
    assert np.abs(tokens - expected["dino_tokens"]).max() <= TOL


def test_token_layout_is_holistic_then_patches_in_raster_order():
    weights, expected, x, _ = _case("hita-vqgan")
    tokenizer = tokbench.load("hita-vqgan", weights=str(weights), **SMALL)
    ids = tokenizer.encode(x).ids
    assert np.array_equal(ids[:, :8].numpy(), expected["slot_ids"])
    assert np.array_equal(ids[:, 8:].reshape(2, 16, 16).numpy(), expected["patch_ids"])
    with torch.device("meta"):
        release = registry.create("hita-vqgan")
    layout = release.layout_for(336, 336)
    assert (layout.arrangement, layout.num_tokens, layout.vocab_size) == ("sequence", 128 + 21 * 21, 16384)


def test_the_ema_weights_come_first_as_upstream_evaluates(tmp_path):
    weights, expected, x, upstream_ids = _case("hita-vqgan")
    real = torch.load(weights, map_location="cpu", weights_only=True)["model"]
    other = {k: v + 0.5 * torch.randn_like(v) if v.is_floating_point() else v for k, v in real.items()}
    torch.save({"ema": real, "model": other}, tmp_path / "with_ema.pt")
    torch.save({"model": other}, tmp_path / "other.pt")
    with_ema = tokbench.load("hita-vqgan", weights=str(tmp_path / "with_ema.pt"), **SMALL).encode(x).ids.numpy()
    assert np.array_equal(with_ema, upstream_ids)
    other_ids = tokbench.load("hita-vqgan", weights=str(tmp_path / "other.pt"), **SMALL).encode(x).ids.numpy()
    assert (other_ids == upstream_ids).mean() < 0.9


def test_training_only_entries_are_ignored_and_missing_ones_reported(tmp_path):
    weights, expected, x, upstream_ids = _case("hita-vqgan")
    state = torch.load(weights, map_location="cpu", weights_only=True)["model"]
    usage = {"quantize.codebook_used": torch.zeros(65536), "slot_quantize.codebook_used": torch.zeros(65536)}
    torch.save({"model": {**state, **usage}}, tmp_path / "with_usage.pt")  # as the release holds them
    ids = tokbench.load("hita-vqgan", weights=str(tmp_path / "with_usage.pt"), **SMALL).encode(x).ids.numpy()
    assert np.array_equal(ids, upstream_ids)
    broken = {k: v for k, v in state.items() if "slot_position_embedding" not in k}
    torch.save({"model": broken}, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="missing keys.*decode_transformer.slot_position_embedding") as err:
        tokbench.load("hita-vqgan", weights=str(tmp_path / "broken.pt"), **SMALL)
    assert "\n" not in str(err.value)


def test_release_files_are_recognised_by_their_keys():
    vanilla, ultra = FIXTURES / "hita-vanilla.pt", FIXTURES / "hita-ultra.pt"
    assert hita.build_vanilla.recognizes(vanilla) and not hita.build_vanilla.recognizes(ultra)
    assert hita.build_ultra.recognizes(ultra) and not hita.build_ultra.recognizes(vanilla)
    assert tokbench.load(ultra, **SMALL).upstream["name"] == "hita-vqgan-ultra"


def test_other_image_sizes_are_a_clear_error():
    weights, *_ = _case("hita-vqgan")
    tokenizer = tokbench.load("hita-vqgan", weights=str(weights), **SMALL)
    with pytest.raises(ValueError, match="Hita encodes 32x32 images only .* got 48x48"):
        tokenizer.encode(torch.rand(1, 3, 48, 48))
    with pytest.raises(ValueError, match="option shift_k cannot be changed"):
        tokbench.load("hita-vqgan", weights=str(weights), shift_k=2, **SMALL)


def test_convert_gives_a_plain_checkpoint_with_the_same_ids(tmp_path):
    weights, expected, x, upstream_ids = _case("hita-vqgan-ultra")
    assert main(["convert", f"hita-vqgan-ultra:{SPEC}", "--weights", str(weights), str(tmp_path / "ckpt")]) == 0
    plain = tokbench.load(tmp_path / "ckpt")
    assert plain.family == "hita"
    assert np.array_equal(plain.encode(x).ids.numpy(), upstream_ids)


def test_dino_resize_matches_kornia_formula():
    """The antialiased resize against the rule written out here: for 336 -> 224 (factor 1.5) a
    3-tap Gaussian of sigma 0.25 with reflected borders, then bicubic with aligned corners."""
    from tokbench.tokenizers.public.hita_model import resize_antialiased

    x = torch.rand(1, 3, 336, 336)
    t = torch.tensor([-1.0, 0.0, 1.0])
    k = torch.exp(-t ** 2 / (2 * 0.25 ** 2))
    k = k / k.sum()
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    kernel = (k[:, None] * k[None, :]).expand(3, 1, 3, 3)
    blurred = torch.nn.functional.conv2d(padded, kernel, groups=3)
    reference = torch.nn.functional.interpolate(blurred, size=(224, 224), mode="bicubic", align_corners=True)
    assert torch.allclose(resize_antialiased(x, 224), reference, atol=1e-6)
    up = torch.rand(1, 3, 32, 32)  # enlarging: no blur
    assert torch.equal(resize_antialiased(up, 224),
                       torch.nn.functional.interpolate(up, size=(224, 224), mode="bicubic", align_corners=True))


def test_a_training_container_with_its_argparse_args_loads(tmp_path):
    """``vq_train.py`` saves ``model``, ``optimizer``, ``steps``, ``args`` (an argparse.Namespace) and
    ``ema``: the Namespace unpickles as an inert stand-in, the weights load."""
    import argparse

    weights, expected, x, upstream_ids = _case("hita-vqgan")
    state = torch.load(weights, map_location="cpu", weights_only=True)["model"]
    args = argparse.Namespace(image_size=336, vq_model="VQ-16", codebook_size=16384, lr=1e-4, ema=True)
    blob = {"model": state, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "steps": 5000,
            "args": args, "ema": state}
    torch.save(blob, tmp_path / "0005000.pt")
    ids = tokbench.load("hita-vqgan", weights=str(tmp_path / "0005000.pt"), **SMALL).encode(x).ids.numpy()
    assert np.array_equal(ids, upstream_ids)
