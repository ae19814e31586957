"""LlamaGen's VQ-8 (``vq_ds8_c2i.pt``) against LlamaGen's own ``VQ_8``.

The fixture (``tests/fixtures/make_llamagen_vq8_fixture.py``) is LlamaGen's ``VQ_8`` at reduced width
with random weights, saved in the release's ``{"model": state_dict}`` container, with the ids and
reconstructions LlamaGen's code computed. Parity: ids 100% equal, reconstructions within 1e-4, end to
end and decoding LlamaGen's own ids. The fixture keeps the release's four levels (stride 8), the
attention of its lowest level, ``quantize.codebook_used`` and an l2-normalized search over codes of
unequal norms.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tokbench
from tokbench import CheckpointError, registry
from tokbench.cli import main
from tokbench.tokenizers.public import llamagen
from helpers import assert_ids_parity

WEIGHTS = Path(__file__).parent / "fixtures" / "llamagen_vq8" / "vq_ds8_c2i.pt"
EXPECTED = np.load(WEIGHTS.parent / "expected.npz")
X = torch.from_numpy(EXPECTED["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255
TOL = 1e-4


def _state() -> dict[str, torch.Tensor]:
    return torch.load(WEIGHTS, map_location="cpu", weights_only=True)["model"]


def test_parity_with_the_upstream_code():
    tokenizer = tokbench.load("llamagen-vq8", weights=str(WEIGHTS))
    assert_ids_parity(tokenizer, X, EXPECTED, (2, 6, 6), tol=TOL)  # stride 8 on 48 px


def test_sizes_are_read_off_the_file():
    cfg = tokbench.load("llamagen-vq8", weights=str(WEIGHTS)).config
    assert (cfg["ch"], tuple(cfg["ch_mult"]), cfg["num_res_blocks"], cfg["z_channels"]) == (32, (1,) * 4, 1, 32)
    assert (cfg["codebook_size"], cfg["code_dim"], cfg["l2_normalize"]) == (256, 8, True)


def test_the_normalized_search_is_what_upstream_does():
    """The codes have unequal norms: only the search on l2-normalized vectors gives upstream's ids."""
    tokenizer = tokbench.load("llamagen-vq8", weights=str(WEIGHTS))
    z_ND = tokenizer.features(X).permute(0, 2, 3, 1).reshape(-1, 8)
    raw = tokenizer.quantize.embedding
    assert (torch.cdist(z_ND, raw).argmin(1).numpy() == EXPECTED["indices"].reshape(-1)).mean() < 0.9
    unit = torch.nn.functional.normalize
    assert np.array_equal(torch.cdist(unit(z_ND, dim=1), unit(raw, dim=1)).argmin(1).numpy(),
                          EXPECTED["indices"].reshape(-1))


def test_the_ema_entry_is_read_first_as_upstream_does(tmp_path):
    """LlamaGen's readers take ``ema``, then ``model``, then ``state_dict``: a training checkpoint
    with both reconstructs from its ``ema`` weights."""
    state = _state()
    other = {k: v + 0.5 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}
    torch.save({"model": other, "ema": state}, tmp_path / "0100000.pt")
    ids = tokbench.load("llamagen-vq8", weights=str(tmp_path / "0100000.pt")).encode(X).ids.numpy()
    assert np.array_equal(ids, EXPECTED["indices"])
    torch.save({"model": other}, tmp_path / "model_only.pt")
    ids = tokbench.load("llamagen-vq8", weights=str(tmp_path / "model_only.pt")).encode(X).ids.numpy()
    assert (ids == EXPECTED["indices"]).mean() < 0.9


def test_the_file_is_recognised_as_vq8_by_its_four_levels():
    assert llamagen.build_vq8.recognizes(WEIGHTS) and not llamagen.build_vq16.recognizes(WEIGHTS)
    assert tokbench.load(WEIGHTS).upstream["name"] == "llamagen-vq8"


def test_a_missing_tensor_is_a_one_line_error(tmp_path):
    state = _state()
    del state["decoder.conv_blocks.0.attn.1.q.weight"]
    torch.save({"model": state}, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="missing keys.*decoder.conv_blocks.0.attn.1.q.weight") as err:
        tokbench.load("llamagen-vq8", weights=str(tmp_path / "broken.pt"))
    assert "\n" not in str(err.value)


def test_convert_round_trips(tmp_path):
    assert main(["convert", "llamagen-vq8", "--weights", str(WEIGHTS), str(tmp_path / "ckpt")]) == 0
    plain = tokbench.load(tmp_path / "ckpt")
    tokens = plain.encode(X)
    assert np.array_equal(tokens.ids.numpy(), EXPECTED["indices"])
    assert np.abs(plain.decode(tokens).numpy() - EXPECTED["recon"]).max() <= TOL


def test_release_configuration_has_the_upstream_size():
    """300 keys and 70,175,371 elements: LlamaGen's ``VQ_8()`` counted with the upstream class, of which
    ``quantize.codebook_used`` (65,536, a training statistic) is not loaded."""
    with torch.device("meta"):
        model = registry.create("llamagen-vq8")
    km = llamagen.keymap_for(model.config)
    own = model.state_dict()
    assert {e.dst for e in km.entries} <= set(own)
    assert (len(km.upstream_keys()), sum(own[e.dst].numel() for e in km.entries)) == (300 - 1, 70_175_371 - 65_536)
    assert model.layout_for(256, 256).num_tokens == 1024
