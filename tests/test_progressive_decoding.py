"""Coarse-to-fine decoding after a short optimisation on a real photo.

An untrained model need not be coarse-to-fine, so each test first fits the tiny model to
a few scikit-image photos (a few hundred Adam steps), then checks that decoding from more
scales / more tokens brings the reconstruction error down.
"""
import torch
from helpers import fit_autoencoder, photo, photo_batch

import tokbench


def test_residual_scale_error_falls_as_more_scales_are_decoded():
    # The astronaut at 64 px: the tiny schedule 1,2,4,8 covers its 8x8 token grid exactly.
    # ch=16 halves the conv widths of the tiny model so 200 steps stay cheap on 2 cores.
    torch.manual_seed(0)
    x = photo("astronaut", 64)
    model = tokbench.create("residual_scale:size=tiny,ch=16")
    fit_autoencoder(model, x, steps=200, lr=2e-3)
    tokens = model.encode(x)
    mse = [float((model.decode_scales(tokens, k) - x).square().mean()) for k in (1, 2, 3, 4)]
    assert all(a > b for a, b in zip(mse, mse[1:])), mse


def test_holistic_1d_full_sequence_beats_its_first_quarter():
    torch.manual_seed(0)
    x = photo_batch(32)
    model = tokbench.create("holistic_1d:size=tiny,num_tokens=8,base_grid=4")
    fit_autoencoder(model, x, steps=250, lr=2e-3)
    tokens = model.encode(x)
    quarter = float((model.decode_prefix(tokens, 2) - x).square().mean())
    full = float((model.decode(tokens) - x).square().mean())
    assert full < quarter, (full, quarter)
