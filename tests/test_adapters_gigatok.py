"""GigaTok (SilentView/GigaTok ``VQVitModelPlus``): CNN + Q-former 1D tokenizer, l2-normalized VQ.

Parity with GigaTok's own code on a small fixture it computed (``tests/fixtures/
make_gigatok_fixture.py``: the upstream ``VQVitModelPlus`` and its blocks, random weights, saved
as upstream's training loop saves, ``argparse.Namespace`` args included): ids 100% equal,
pre-quantization features and reconstructions within 1e-4, end to end and from upstream's ids.
The release configurations are checked against every key and shape of the upstream model at
``VQ_SS256.yaml`` and the parameter counts of all four releases.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import tokbench
from tokbench import CheckpointError, Tokens, registry
from tokbench.cli import main
from tokbench.nn.family import to_model_range
from tokbench.tokenizers.public import gigatok, llamagen
from tokbench.tokenizers.public.gigatok_model import depth_to_space, multi_level_queries

FIXTURES = Path(__file__).parent / "fixtures" / "gigatok"
WEIGHTS = FIXTURES / "VQ_nano16.pt"
EXPECTED = np.load(FIXTURES / "expected.npz")
X = torch.from_numpy(EXPECTED["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255
TOL = 1e-4


@pytest.fixture(scope="module")
def tokenizer():
    return tokbench.load("gigatok-ss256", weights=str(WEIGHTS))


def test_parity_with_the_upstream_code(tokenizer):
    assert EXPECTED["margin"] > 1e-4  # every id is decided by more than float rounding
    tokens = tokenizer.encode(X)
    assert tokens.ids.shape == EXPECTED["indices"].shape == (2, 16)
    assert (tokens.ids.numpy() == EXPECTED["indices"]).mean() >= 0.999
    assert len(np.unique(EXPECTED["indices"])) > 8  # many codes in use, not one collapsed direction
    assert np.abs(tokenizer.decode(tokens).numpy() - EXPECTED["recon"]).max() <= TOL
    stored = Tokens(tokens.layout, tokens.image_size, ids=torch.from_numpy(EXPECTED["indices"]))
    assert np.abs(tokenizer.decode(stored).numpy() - EXPECTED["recon"]).max() <= TOL


def test_features_before_quantization_match(tokenizer):
    with torch.no_grad():
        z = tokenizer.quant_conv(tokenizer.s2to1encoder(tokenizer.encoder(to_model_range(X))))
    assert z.shape == EXPECTED["features"].shape == (2, 8, 1, 16)
    assert np.abs(z.numpy() - EXPECTED["features"]).max() <= TOL


def test_the_file_options_are_read_off_the_tensors(tokenizer):
    assert tokenizer.config == dict(image_size=16, ch=32, ch_mult=[1, 1], num_res_blocks=1, z_channels=32, width=32,
                                    depth=2, heads=2, dec_width=32, dec_depth=2, dec_heads=2, num_tokens=16,
                                    codebook_size=256, code_dim=8)
    assert tokenizer.layout_for(16, 16).num_tokens == 16 and tokenizer.stride == 2


def _blob() -> dict:
    return torch.load(WEIGHTS, map_location="cpu", weights_only=False)  # our own fixture, written by the generator


def test_ema_weights_come_first_as_upstream_loads_them(tmp_path):
    blob = _blob()
    other = {k: v + 0.5 * torch.randn_like(v) if v.is_floating_point() else v for k, v in blob["model"].items()}
    torch.save({"model": other, "ema": blob["model"]}, tmp_path / "with_ema.pt")
    ids = tokbench.load("gigatok-ss256", weights=str(tmp_path / "with_ema.pt")).encode(X).ids.numpy()
    assert np.array_equal(ids, EXPECTED["indices"])
    torch.save({"model": other}, tmp_path / "live.pt")
    ids = tokbench.load("gigatok-ss256", weights=str(tmp_path / "live.pt")).encode(X).ids.numpy()
    assert (ids == EXPECTED["indices"]).mean() < 0.9


def test_only_the_training_only_tensors_are_ignored(tmp_path):
    state = _blob()["model"]
    assert "quantize.codebook_used" in state and any(k.startswith("s1to2decoder.distill_mlp.") for k in state)
    missing = {k: v for k, v in state.items() if not k.startswith("decoder.adaptive.1.")}
    torch.save({"model": missing}, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing keys \[decoder.adaptive.1.beta.bias") as err:
        tokbench.load("gigatok-ss256", weights=str(tmp_path / "missing.pt"))
    assert "\n" not in str(err.value)
    torch.save({"model": {**state, "s2to1encoder.query_1d": torch.zeros(16, 1, 32)}}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"unexpected keys \[s2to1encoder.query_1d\]"):
        tokbench.load("gigatok-ss256", weights=str(tmp_path / "extra.pt"))


def test_an_unknown_qformer_size_is_a_one_line_error(tmp_path):
    state = dict(_blob()["model"])
    state.pop("s2to1encoder.transformer.1.norm1.weight")
    for k in [k for k in state if k.startswith("s2to1encoder.transformer.1.")]:
        state.pop(k)
    torch.save({"model": state}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="a 32-wide, 1-deep Q-former is none of GigaTok's sizes"):
        tokbench.load("gigatok-ss256", weights=str(tmp_path / "odd.pt"))


def test_images_of_another_size_are_refused(tokenizer):
    with pytest.raises(ValueError, match="GigaTok encodes 16x16 images only"):
        tokenizer.encode(torch.rand(1, 3, 32, 32))


def test_convert_then_load_as_a_plain_checkpoint(tmp_path, tokenizer):
    assert main(["convert", "gigatok-ss256", "--weights", str(WEIGHTS), str(tmp_path / "ckpt")]) == 0
    plain = tokbench.load(tmp_path / "ckpt")
    assert plain.family == "gigatok" and plain.config == tokenizer.config
    assert np.array_equal(plain.encode(X).ids.numpy(), EXPECTED["indices"])


def test_multi_level_queries_against_block_means():
    x = torch.randn(1, 3, 8, 8)
    q = multi_level_queries(x, 16)  # 1 + 1 + 2 + 4 + 8
    assert q.shape == (1, 16, 3)
    assert torch.allclose(q[0, 0], x.mean((2, 3))[0]) and torch.allclose(q[0, 1], q[0, 0])
    assert torch.allclose(q[0, 2], x[0, :, :, :4].mean((1, 2)))  # level 1: left half, then right half
    assert torch.allclose(q[0, 6], x[0, :, 4:, :4].mean((1, 2)))  # level 2 (2x2, raster): bottom-left block
    assert torch.allclose(q[0, 8 + 5], x[0, :, 4:, 2:4].mean((1, 2)))  # level 3: 2 rows x 4 columns, raster


def test_depth_to_space_is_the_dcr_order():
    x = torch.arange(8.0).reshape(1, 8, 1, 1)  # 2 output channels, block 2
    y = depth_to_space(x, 2)
    # channel (i * 2 + j) * 2 + c goes to (c, i, j)
    assert y[0, 0].flatten().tolist() == [0.0, 2.0, 4.0, 6.0] and y[0, 1].flatten().tolist() == [1.0, 3.0, 5.0, 7.0]
    assert not torch.equal(y, torch.nn.functional.pixel_shuffle(x, 2))


def _release_keys() -> dict[str, list[int]]:
    return json.loads((FIXTURES / "release_keys_ss256.json").read_text())


def test_release_configuration_has_every_upstream_key_and_shape():
    upstream = _release_keys()
    with torch.device("meta"):
        model = registry.create("gigatok-ss256")
    km, own = gigatok.keymap_for(model), model.state_dict()
    used = {k for k in upstream if k not in gigatok.IGNORED_KEYS and not k.startswith(gigatok.IGNORED_PREFIXES)}
    assert len(upstream) - len(used) == 7  # codebook_used + the 3-layer distill MLP
    assert km.upstream_keys() == used
    assert all(list(own[e.dst].shape) == upstream[e.srcs[0]] for e in km.entries)


# Parameters of upstream VQVitModelPlus at configs/vq/VQ_*256.yaml (out_inner_dim 768, DINOv2-B's),
# counted with the upstream classes on the meta device; the README rounds them to 136M/232M/622M/2.9B.
UPSTREAM_PARAMETERS = {"gigatok-ss256": 136_073_227, "gigatok-sb256": 232_399_627, "gigatok-bl256": 621_637_131,
                       "gigatok-bl256-dino-disc": 621_637_131, "gigatok-xlxxl256": 2_893_970_443}


@pytest.mark.parametrize("name", list(UPSTREAM_PARAMETERS))
def test_release_sizes_match_the_upstream_parameter_counts(name):
    with torch.device("meta"):
        model = registry.create(name)
    w = model.config["dec_width"]
    distill_mlp = (w * 4 * w + 4 * w) + (16 * w * w + 4 * w) + (4 * w * 768 + 768)
    assert model.num_parameters() + distill_mlp == UPSTREAM_PARAMETERS[name]
    assert model.layout_for(256, 256).num_tokens == 256 and model.quantize.codebook_size == 16384


def _release_shaped_file(tmp_path: Path, widths: tuple[int, int] | None = None) -> Path:
    """The SS256 key set with stand-in tensors (one stored element each): what recognition reads."""
    state = {k: torch.zeros(1).expand(*s) if s else torch.zeros(()) for k, s in _release_keys().items()}
    if widths:
        state["s2to1encoder.encoder_embed.weight"] = torch.zeros(1).expand(widths[0], 256)
        state["s1to2decoder.decoder_embed.weight"] = torch.zeros(1).expand(widths[1], 256)
    path = tmp_path / "VQ_SS256_e100.pt"
    torch.save({"model": state, "steps": 0}, path)
    return path


def test_a_release_file_is_recognised_as_its_gigatok_name_not_llamagen(tmp_path):
    path = _release_shaped_file(tmp_path)
    hits = [n for n in UPSTREAM_PARAMETERS if registry.get_factory(n).recognizes(path)]
    assert hits == ["gigatok-ss256"]
    assert not llamagen.build_vq16.recognizes(path)  # same CNN names and codebook_used, but a GigaTok
    bl = _release_shaped_file(tmp_path, (768, 1024))
    assert [n for n in UPSTREAM_PARAMETERS if registry.get_factory(n).recognizes(bl)] == ["gigatok-bl256",
                                                                                 "gigatok-bl256-dino-disc"]


def test_a_file_of_no_release_size_needs_a_name():
    with pytest.raises(CheckpointError, match="could be any of gigatok-bl256, gigatok-bl256-dino-disc"):
        tokbench.load(WEIGHTS)


def test_the_training_args_namespace_is_read_as_an_inert_stand_in():
    from tokbench.checkpoint import ReleasedClassStandIn
    from tokbench.tokenizers.public.release import read_any

    args = read_any(WEIGHTS)["args"]  # upstream saves argparse.Namespace beside the weights
    assert isinstance(args, ReleasedClassStandIn) and args.state["vq_model"] == "VQVitModelPlus"


def test_a_token_count_the_grid_cannot_pool_is_a_one_line_error():
    from tokbench.tokenizers.public.gigatok_model import GigaTokTokenizer

    with pytest.raises(ValueError, match="num_tokens must be a power of two .* 8x8 grid; got 24"):
        GigaTokTokenizer(image_size=16, ch=32, ch_mult=(1, 1), num_tokens=24)
    with pytest.raises(ValueError, match="num_tokens must be a power of two .* 2x2 grid; got 64"):
        GigaTokTokenizer(image_size=4, ch=32, ch_mult=(1, 1), num_tokens=64)  # finest level: 4 rows x 8 columns
