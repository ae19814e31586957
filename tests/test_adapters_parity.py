"""Parity of the public-tokenizer adapters with the upstream code, on the small fixtures.

Each fixture (``../shared/adapter-fixtures`` beside the repo checkout) holds a random-weight
model saved in the upstream's released format, two images, and the upstream's own ids (or
latents) and reconstructions. Loaded through the public loader, tokbench must give the same
ids (>= 99.9 % equal) or latents (within 1e-4) and reconstructions within 1e-4, end to end
and when decoding the upstream's stored ids.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tokbench
from tokbench import Tokens

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "adapter-fixtures"
ID_AGREEMENT, RECON_TOL, LATENT_TOL = 0.999, 1e-4, 1e-4

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"adapter fixtures not found at {FIXTURES}")

# (case id, public name, weights relative to the fixture, expected folder, suffix of the expected arrays)
DISCRETE = [
    ("llamagen", "llamagen-vq16", "llamagen-vq16/checkpoint/vq_ds16_c2i.pt", "llamagen-vq16/expected"),
    ("var-64", "var-vqvae", "var-vqvae-ch32v512z32/checkpoint/vae_ch32v512z32.pth", "var-vqvae-ch32v512z32/expected"),
    ("var-128", "var-vqvae", "var-vqvae-ch32v512z32/checkpoint/vae_ch32v512z32.pth",
     "var-vqvae-ch32v512z32/expected_128"),
    ("taming", "taming-vqgan-f16-16384", "taming-vqgan-f16-256/checkpoint/ckpts/last.ckpt",
     "taming-vqgan-f16-256/expected"),
    ("titok", "titok-s128", "titok-t8/checkpoint", "titok-t8/expected"),
    ("open-magvit2", "open-magvit2-lfq", "open-magvit2-lfq/checkpoint/imagenet_256_L.ckpt", "open-magvit2-lfq/expected"),
]
CONTINUOUS = [
    ("sd-diffusers", "sd-vae-kl-f8", "sd-vae-kl-f8/checkpoint/diffusers/vae", ""),
    ("sd-ldm", "sd-vae-ft-mse", "sd-vae-kl-f8/checkpoint/ldm/vae-ft-mse-840000-ema-pruned.ckpt", "_ldm"),
    ("sd-full-ckpt", "sd-vae-kl-f8", "sd-vae-kl-f8/checkpoint/ldm/sd-v1-style.ckpt", "_ldm"),
]


def _load(name: str, weights: str):
    return tokbench.load(name, weights=str(FIXTURES / weights))


def _expected(folder: str, array: str) -> np.ndarray:
    return np.load(FIXTURES / folder / f"{array}.npy")


def _ids_in_upstream_shape(tokens: Tokens, expected: np.ndarray) -> np.ndarray:
    return tokens.ids.numpy().reshape(expected.shape)


@pytest.mark.parametrize("case,name,weights,folder", DISCRETE, ids=[c[0] for c in DISCRETE])
def test_discrete_parity(case, name, weights, folder):
    tokenizer = _load(name, weights)
    x = torch.from_numpy(_expected(folder, "inputs"))
    ids_up, recon_up = _expected(folder, "indices"), _expected(folder, "recon")

    tokens = tokenizer.encode(x)
    agreement = float((_ids_in_upstream_shape(tokens, ids_up) == ids_up).mean())
    assert agreement >= ID_AGREEMENT, f"{case}: ids agree on {agreement:.4f}"
    end_to_end = np.abs(tokenizer.decode(tokens).numpy() - recon_up).max()
    assert end_to_end <= RECON_TOL, f"{case}: end-to-end reconstruction off by {end_to_end:.3g}"

    upstream_ids = torch.from_numpy(ids_up).reshape(tokens.ids.shape)
    from_ids = tokenizer.decode(Tokens(tokens.layout, tokens.image_size, ids=upstream_ids))
    diff = np.abs(from_ids.numpy() - recon_up).max()
    assert diff <= RECON_TOL, f"{case}: decoding the upstream ids is off by {diff:.3g}"


@pytest.mark.parametrize("case,name,weights,suffix", CONTINUOUS, ids=[c[0] for c in CONTINUOUS])
def test_continuous_parity(case, name, weights, suffix):
    folder = "sd-vae-kl-f8/expected"
    tokenizer = _load(name, weights)
    x = torch.from_numpy(_expected(folder, "inputs"))
    latents_up, recon_up = _expected(folder, f"latents{suffix}"), _expected(folder, f"recon{suffix}")

    tokens = tokenizer.encode(x)
    latent_diff = np.abs(tokens.latents.numpy() - latents_up).max()
    assert latent_diff <= LATENT_TOL, f"{case}: latents off by {latent_diff:.3g}"
    end_to_end = np.abs(tokenizer.decode(tokens).numpy() - recon_up).max()
    assert end_to_end <= RECON_TOL, f"{case}: end-to-end reconstruction off by {end_to_end:.3g}"
    from_latents = tokenizer.decode(Tokens(tokens.layout, tokens.image_size, latents=torch.from_numpy(latents_up)))
    diff = np.abs(from_latents.numpy() - recon_up).max()
    assert diff <= RECON_TOL, f"{case}: decoding the upstream latents is off by {diff:.3g}"


def test_var_layout_is_upstream_order():
    """VAR's ids: scale after scale, raster order in each; the schedule cut at the final map."""
    tokenizer = _load("var-vqvae", DISCRETE[2][2])
    layout = tokenizer.layout_for(128, 128)
    assert layout.scales == (1, 2, 3, 4, 5, 6, 8) and layout.grid == (8, 8) and layout.num_tokens == 155
    assert tokenizer.layout_for(256, 256).scales == (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
