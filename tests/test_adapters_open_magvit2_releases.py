"""The other SEED-Voken releases the Open-MAGVIT2 and IBQ code loads: ``open-magvit2-lfq-128``,
``open-magvit2-pretrain-{262144,16384}``, ``ibq-pretrain-{16384,262144}``.

Parity with SEED-Voken's own modules on a small fixture in ``pretrain256_16384.ckpt``'s container
(``tests/fixtures/make_open_magvit2_pretrain_fixture.py``: 14-bit LFQ, levels whose widths change,
so the ``nin_shortcut`` blocks run): ids 100% equal, reconstructions within 1e-4, end to end and
from upstream's ids. Recognition: files holding each release's key listing at its full sizes
(every tensor a stride-0 view of one element, so the file stays small) give the names those
sizes fit.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tokbench
from tokbench import CheckpointError, Tokens
from tokbench.checkpoint import public_candidates
from tokbench.tokenizers.public import open_magvit2
from tokbench.tokenizers.public.open_magvit2 import OpenMagvit2Tokenizer

WEIGHTS = Path(__file__).parent / "fixtures" / "open_magvit2_pretrain" / "pretrain256_16384.ckpt"
EXPECTED = np.load(WEIGHTS.parent / "expected.npz")
X = torch.from_numpy(EXPECTED["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255
TOL = 1e-4


def test_parity_with_the_upstream_code():
    tokenizer = tokbench.load("open-magvit2-pretrain-16384", weights=str(WEIGHTS))
    assert tokenizer.config == dict(ch=32, ch_mult=[2, 1], num_res_blocks=1, z_channels=14)
    tokens = tokenizer.encode(X)
    assert tokens.layout.vocab_size == 16384
    assert tokens.ids.shape == EXPECTED["indices"].shape == (2, 24, 24)
    assert (tokens.ids.numpy() == EXPECTED["indices"]).mean() >= 0.999
    assert np.abs(tokenizer.decode(tokens).numpy() - EXPECTED["recon"]).max() <= TOL
    stored = Tokens(tokens.layout, tokens.image_size, ids=torch.from_numpy(EXPECTED["indices"]))
    assert np.abs(tokenizer.decode(stored).numpy() - EXPECTED["recon_from_ids"]).max() <= TOL


def test_the_ema_weights_are_the_ones_loaded(tmp_path):
    blob = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    live = {k: v for k, v in blob["state_dict"].items() if not k.startswith("model_ema.")}
    torch.save({**blob, "state_dict": live}, tmp_path / "live.ckpt")
    ids = tokbench.load("open-magvit2-pretrain-16384", weights=str(tmp_path / "live.ckpt")).encode(X).ids.numpy()
    assert (ids == EXPECTED["indices"]).mean() < 0.9


def _release_listing(tmp_path: Path, name: str) -> Path:
    """A Lightning file with the key listing of ``name``'s release at full size (stride-0 tensors)."""
    with torch.device("meta"):
        model = OpenMagvit2Tokenizer(**open_magvit2.RELEASES[name])
    state = {k: torch.zeros(()).expand(v.shape) for k, v in model.state_dict().items()
             if not k.startswith("quantize.")}
    state.update({f"model_ema.{k.replace('.', '')}": v for k, v in state.items()})
    path = tmp_path / open_magvit2.FILES[name][0]
    torch.save({"epoch": 0, "state_dict": state}, path)
    assert path.stat().st_size < 2_000_000
    return path


@pytest.mark.parametrize("name,candidates", [
    ("open-magvit2-lfq-128", ["open-magvit2-lfq-128"]),
    ("open-magvit2-pretrain-16384", ["open-magvit2-pretrain-16384"]),
    ("open-magvit2-pretrain-262144", ["open-magvit2-lfq", "open-magvit2-pretrain-262144"]),
    ("open-magvit2-lfq", ["open-magvit2-lfq", "open-magvit2-pretrain-262144"]),
])
def test_a_release_file_is_recognised_by_its_sizes(tmp_path, name, candidates):
    assert public_candidates(_release_listing(tmp_path, name)) == candidates


def test_the_256_px_sizes_must_be_named_and_other_sizes_load_as_the_generic_name(tmp_path):
    with pytest.raises(CheckpointError, match="could be any of open-magvit2-lfq, open-magvit2-pretrain-262144; "
                                              "name it") as err:
        tokbench.load(_release_listing(tmp_path, "open-magvit2-lfq"))
    assert "\n" not in str(err.value)
    assert public_candidates(WEIGHTS) == ["open-magvit2-lfq"]  # ch_mult (2, 1): no release's sizes
    assert tokbench.load(WEIGHTS).upstream["name"] == "open-magvit2-lfq"


@pytest.mark.parametrize("name,side,tokens,vocab", [
    ("open-magvit2-lfq-128", 128, 256, 262144),
    ("open-magvit2-pretrain-262144", 256, 256, 262144),
    ("open-magvit2-pretrain-16384", 256, 256, 16384),
])
def test_release_token_grids_and_evaluation_sides(name, side, tokens, vocab):
    with torch.device("meta"):
        model = tokbench.registry.create(name)
    layout = model.layout_for(side, side)
    assert (layout.num_tokens, layout.vocab_size) == (tokens, vocab)
    assert f"resized to {side}" in tokbench.registry.get_factory(name).release.preprocessing


def test_ibq_pretrain_releases_load_the_ibq_layout():
    ibq_fixture = Path(__file__).parent / "fixtures" / "ibq" / "imagenet256_256.ckpt"
    ibq_expected = np.load(ibq_fixture.parent / "expected.npz")
    x = torch.from_numpy(ibq_expected["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255
    tokenizer = tokbench.load("ibq-pretrain-262144", weights=str(ibq_fixture))
    assert np.array_equal(tokenizer.encode(x).ids.numpy(), ibq_expected["indices"])
    assert tokbench.registry.get_factory("ibq-pretrain-16384").release.files.startswith("IBQ_pretrain_16384.ckpt")


def test_ibq_pretrain_files_cannot_be_told_from_the_imagenet_ones(tmp_path):
    blob = torch.load(Path(__file__).parent / "fixtures" / "ibq" / "imagenet256_256.ckpt", weights_only=True)
    state = dict(blob["state_dict"])
    for key in ("quantize.embedding.weight", "model_ema.quantizeembeddingweight"):
        state[key] = torch.zeros(()).expand(16384, state[key].shape[1])
    torch.save({**blob, "state_dict": state}, tmp_path / "IBQ_pretrain_16384.ckpt")
    assert public_candidates(tmp_path / "IBQ_pretrain_16384.ckpt") == ["ibq-16384", "ibq-pretrain-16384"]
