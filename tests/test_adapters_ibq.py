"""IBQ (SEED-Voken): taming's VQGAN with an inner-product index, loaded with its EMA weights.

Parity with SEED-Voken's own IBQ modules on a small fixture they computed (``tests/fixtures/
make_ibq_fixture.py``: the upstream ``Encoder``/``Decoder``/``IndexPropagationQuantize``/``LitEma``,
random weights, saved in the release's Lightning container; the Lightning ``IBQ`` class itself
is composed from those modules as its encode/decode do): ids 100% equal, reconstructions within
1e-4. The fixture's live and EMA weights differ, and its codes have unequal norms, so the tests
also show that the EMA weights and the inner-product search are what give upstream's outputs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tokbench
from tokbench import CheckpointError, registry
from tokbench.cli import main
from tokbench.quantize import VectorQuantizer
from tokbench.tokenizers.public import taming
from helpers import assert_ids_parity

WEIGHTS = Path(__file__).parent / "fixtures" / "ibq" / "imagenet256_256.ckpt"
EXPECTED = np.load(WEIGHTS.parent / "expected.npz")
X = torch.from_numpy(EXPECTED["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255
TOL = 1e-4


def test_parity_with_the_upstream_code():
    tokenizer = tokbench.load("ibq-16384", weights=str(WEIGHTS))
    assert_ids_parity(tokenizer, X, EXPECTED, (2, 48, 48), tol=TOL)


def test_the_ema_weights_are_the_ones_loaded(tmp_path):
    blob = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    live = {k: v for k, v in blob["state_dict"].items() if not k.startswith("model_ema.")}
    torch.save({**blob, "state_dict": live}, tmp_path / "live.ckpt")
    ids = tokbench.load("ibq-16384", weights=str(tmp_path / "live.ckpt")).encode(X).ids.numpy()
    assert (ids == EXPECTED["indices"]).mean() < 0.9


def test_inner_product_search_is_what_upstream_does():
    tokenizer = tokbench.load("ibq-16384", weights=str(WEIGHTS))
    assert tokenizer.config["quantizer_options"] == {"search": "inner_product"}
    z_ND = tokenizer.features(X).permute(0, 2, 3, 1).reshape(-1, tokenizer.quantize.code_dim)
    codes = tokenizer.quantize.codebook()
    by_l2 = torch.cdist(z_ND, codes).argmin(1).numpy()
    assert (by_l2 == EXPECTED["indices"].reshape(-1)).mean() < 0.9  # L2 would not reproduce the ids
    assert np.array_equal((z_ND @ codes.t()).argmax(1).numpy(), EXPECTED["indices"].reshape(-1))


def test_vector_quantizer_inner_product_search():
    by_ip, by_l2 = VectorQuantizer(2, 2, search="inner_product").eval(), VectorQuantizer(2, 2).eval()
    with torch.no_grad():
        for q in (by_ip, by_l2):
            q.embedding.copy_(torch.tensor([[1.0, 0.0], [3.0, 0.0]]))
    z = torch.tensor([[1.2, 0.0], [-1.0, 0.0]])[:, :, None]  # (B=2, D=2, 1)
    assert by_ip(z).ids.flatten().tolist() == [1, 0]  # largest <z, e>: 3.6 > 1.2 and -1 > -3
    assert by_l2(z).ids.flatten().tolist() == [0, 0]  # nearest: |1.2 - 1| < |1.2 - 3|
    with pytest.raises(ValueError, match="search must be one of l2, inner_product, got 'cosine'"):
        VectorQuantizer(2, 2, search="cosine")


def _with_codebook(tmp_path: Path, size: int) -> Path:
    """The fixture in the Lightning 2 layout (a ``callbacks`` entry) with ``size`` codes."""
    blob = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    state = dict(blob["state_dict"])
    for key in ("quantize.embedding.weight", "model_ema.quantizeembeddingweight"):
        state[key] = torch.randn(size, state[key].shape[1])
    path = tmp_path / f"imagenet256_{size}.ckpt"
    torch.save({**blob, "callbacks": {}, "state_dict": state}, path)
    return path


def test_release_files_are_recognised_as_ibq_not_taming(tmp_path):
    path = _with_codebook(tmp_path, 1024)
    assert tokbench.load(path).upstream["name"] == "ibq-1024"
    assert not taming.build_f16_1024.recognizes(path)
    with pytest.raises(CheckpointError, match="could be any of ibq-1024, ibq-16384, ibq-262144, ibq-8192"):
        tokbench.load(WEIGHTS)  # 256 codes: no release's size


def test_convert_keeps_the_search(tmp_path):
    assert main(["convert", "ibq-16384", "--weights", str(WEIGHTS), str(tmp_path / "ckpt")]) == 0
    plain = tokbench.load(tmp_path / "ckpt")
    assert plain.config["quantizer_options"] == {"search": "inner_product"}
    assert np.array_equal(plain.encode(X).ids.numpy(), EXPECTED["indices"])


def test_a_missing_shadow_and_tensor_is_a_one_line_error(tmp_path):
    blob = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    state = {k: v for k, v in blob["state_dict"].items() if "post_quant_conv" not in k and "postquantconv" not in k}
    torch.save({**blob, "state_dict": state}, tmp_path / "broken.ckpt")
    with pytest.raises(CheckpointError, match="missing keys.*post_quant_conv") as err:
        tokbench.load("ibq-16384", weights=str(tmp_path / "broken.ckpt"))
    assert "\n" not in str(err.value)


def test_release_configuration_has_the_upstream_size():
    """543 keys and 110,982,019 elements: SEED-Voken's Encoder, Decoder, quant convs and
    IndexPropagationQuantize at imagenet_ibqgan_16384.yaml, counted with the upstream classes."""
    with torch.device("meta"):
        model = registry.create("ibq-16384")
    km = taming.keymap_for(model.config)
    own = model.state_dict()
    assert (len(km.upstream_keys()), sum(own[e.dst].numel() for e in km.entries)) == (543, 110_982_019)
    assert model.layout_for(256, 256).num_tokens == 256
    for n in (1024, 8192, 262144):
        with torch.device("meta"):
            assert registry.create(f"ibq-{n}").quantize.codebook_size == n
