"""VAR's VQVAE at 512 px (``var-vqvae-512``): the same file as ``var-vqvae`` with VAR's 512 px
schedule. Expected outputs come from VAR's own VQVAE built with that schedule on the shared small
checkpoint (``tests/fixtures/var_vqvae_512/make_fixture.py``): one 512x512 image, its 2,240 ids,
and every 4th pixel of the reconstruction."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import tokbench
from tokbench import Tokens, registry

FIXTURES = Path(os.environ.get("TOKBENCH_ADAPTER_FIXTURES",
                               Path(__file__).resolve().parents[1].parent / "shared" / "adapter-fixtures"))
CHECKPOINT = FIXTURES / "var-vqvae-ch32v512z32/checkpoint/vae_ch32v512z32.pth"
EXPECTED = Path(__file__).parent / "fixtures/var_vqvae_512/expected.npz"
SCALES_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)


def test_the_512_schedule_gives_2240_ids_per_image():
    with torch.device("meta"):
        model = registry.create("var-vqvae-512")
    layout = model.layout_for(512, 512)
    assert layout.scales == SCALES_512 and layout.num_tokens == sum(s * s for s in SCALES_512) == 2240
    with torch.device("meta"):
        assert registry.create("var-vqvae").layout_for(512, 512).num_tokens != 2240  # the 256 schedule differs


@pytest.mark.skipif(not CHECKPOINT.is_file(), reason=f"adapter fixture not found at {CHECKPOINT}")
def test_parity_with_var_at_512():
    expected = np.load(EXPECTED)
    assert tuple(expected["scales"]) == SCALES_512
    tokenizer = tokbench.load("var-vqvae-512", weights=str(CHECKPOINT))
    x = torch.from_numpy(expected["inputs_uint8"]).permute(2, 0, 1)[None].float() / 255
    tokens = tokenizer.encode(x)
    # Every id equal (a 512 px image has 2,240), so decoding tokbench's ids is decoding upstream's.
    assert np.array_equal(tokens.ids.numpy().reshape(1, -1), expected["indices"])
    # Decoded in float64: at 512 px tokbench's float32 decoder lands 6.5e-5 to 1.7e-4 from upstream's
    # float32 output depending on the thread count (float32 rounding over a 32x32 attention and ten
    # bicubic upsamplings), while float64 lands 8.8e-6 from it; one changed id moves it by ~1 (fixture README).
    recon = tokenizer.double().decode(tokens)[:, :, ::4, ::4].numpy()
    assert np.abs(recon - expected["recon_every4"]).max() <= 1e-4
