"""BSQ-ViT (zhaoyue-zephyrus/bsq-vit): a ViT with a BSQ bottleneck, from its training checkpoint.pt.

Parity with BSQ-ViT's own ``VITBSQModel`` on a small fixture it computed (``tests/fixtures/
make_bsq_vit_fixture.py``: upstream code, random weights, saved as the training script saves a DDP
run with EMA -- ``module.``/``module.module.`` prefixes, an OmegaConf config, argparse args; the
expected outputs from upstream's own ``init_from_ckpt``): ids 100% equal, reconstructions (end to
end and decoding upstream's ids) within 1e-4. The fixture's live and EMA weights give different
ids, so the tests also show which set is loaded; its ids are upstream's most-significant-first
layout, which tokbench's least-significant-first BSQ only gives with the channels reversed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tokbench
from tokbench import CheckpointError, Tokens, registry
from tokbench.checkpoint import ReleasedClassStandIn, torch_load_safely
from tokbench.cli import main
from tokbench.quantize.binary import bits_to_ids
from tokbench.tokenizers.public import bsq_vit

WEIGHTS = Path(__file__).parent / "fixtures" / "bsq_vit" / "checkpoint.pt"
EXPECTED = np.load(WEIGHTS.parent / "expected.npz")
X = torch.from_numpy(EXPECTED["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255
TOL = 1e-4


def _blob() -> dict:
    return torch_load_safely(WEIGHTS, stand_ins=bsq_vit.CONTAINER_GLOBALS)


def _saved(tmp_path: Path, blob: dict, name: str = "checkpoint.pt") -> Path:
    """A variant of the release written back (without the read stand-ins of its config and args)."""
    torch.save({k: v for k, v in blob.items() if not isinstance(v, ReleasedClassStandIn)}, tmp_path / name)
    return tmp_path / name


def test_parity_with_the_upstream_code():
    tokenizer = tokbench.load("bsq-vit-18bit", weights=str(WEIGHTS))
    tokens = tokenizer.encode(X)
    assert tokens.ids.shape == EXPECTED["indices"].shape == (2, 6, 6)
    assert tokens.layout.vocab_size == 2 ** 18
    assert EXPECTED["margin"] > 1e-5  # no bit at the rounding edge: equal ids are a meaningful check
    assert (tokens.ids.numpy() == EXPECTED["indices"]).mean() >= 0.999
    assert np.abs(tokenizer.decode(tokens).numpy() - EXPECTED["recon"]).max() <= TOL
    stored = Tokens(tokens.layout, tokens.image_size, ids=torch.from_numpy(EXPECTED["indices"]))
    assert np.abs(tokenizer.decode(stored).numpy() - EXPECTED["recon_from_ids"]).max() <= TOL


def test_ema_weights_by_default_live_ones_on_request():
    assert (EXPECTED["indices"] != EXPECTED["indices_live"]).mean() > 0.5  # the two sets really differ
    live = tokbench.load(registry.with_weights("bsq-vit-18bit:use_ema=false", str(WEIGHTS)))  # the CLI's spec
    assert (live.encode(X).ids.numpy() == EXPECTED["indices_live"]).mean() >= 0.999
    with pytest.raises(ValueError, match="use_ema must be true or false, got 'maybe'"):
        tokbench.load("bsq-vit-18bit:use_ema=maybe")


def test_without_an_ema_copy_the_live_weights_load(tmp_path):
    path = _saved(tmp_path, {**_blob(), "ema_state_dict": None})  # a run without --use-ema
    assert (tokbench.load("bsq-vit-18bit", weights=str(path)).encode(X).ids.numpy()
            == EXPECTED["indices_live"]).mean() >= 0.999


def test_the_files_config_sets_the_input_range_and_heads():
    """Upstream built from a config with ``data.zero_mean: False`` (images in [0, 1], as VTBench feeds
    them) and 6 heads: the loader takes both from the file's config (the tensors say neither)."""
    path = WEIGHTS.parent / "checkpoint_zero_mean_false.pt"
    tokenizer = tokbench.load("bsq-vit-18bit", weights=str(path))
    assert (tokenizer.config["zero_mean"], tokenizer.config["heads"]) == (False, 6)
    tokens = tokenizer.encode(X)
    assert (tokens.ids.numpy() == EXPECTED["indices_zero_mean_false"]).mean() >= 0.999
    assert np.abs(tokenizer.decode(tokens).numpy() - EXPECTED["recon_zero_mean_false"]).max() <= TOL
    assert (EXPECTED["indices_zero_mean_false"] != EXPECTED["indices"]).mean() > 0.5  # the settings matter
    with pytest.raises(ValueError, match="option zero_mean=True cannot be changed: the weights .* fix zero_mean=False"):
        tokbench.load("bsq-vit-18bit", weights=str(path), zero_mean=True)
    assert tokbench.load("bsq-vit-18bit", weights=str(WEIGHTS)).config["zero_mean"] is True


def test_a_file_without_its_config_gets_the_released_settings(tmp_path):
    path = _saved(tmp_path, _blob())  # config and args left out
    tokenizer = tokbench.load("bsq-vit-18bit", weights=str(path))
    assert (tokenizer.config["zero_mean"], tokenizer.config["heads"]) == (True, 12)
    assert np.array_equal(tokenizer.encode(X).ids.numpy(), EXPECTED["indices"])


_VIT = dict(image_size=48, patch_size=8, width=36, layers=2, heads=12)


@pytest.mark.parametrize("model, message", [
    (dict(target="transcoder.models.bsqvit.VITVQModel", params={}), "builds 'transcoder.models.bsqvit.VITVQModel', not"),
    (dict(target="transcoder.models.bsqvit.VITBSQModel", params=dict(l2_norm=True, post_q_l2_norm=True,
          logit_laplace=True, vitconfig=_VIT)), "model.params.logit_laplace=True is not supported"),
    (dict(target="transcoder.models.bsqvit.VITBSQModel", params=dict(l2_norm=True, post_q_l2_norm=False,
          vitconfig=_VIT)), "model.params.post_q_l2_norm=False is not supported"),
    (dict(target="transcoder.models.bsqvit.VITBSQModel", params=dict(l2_norm=True, post_q_l2_norm=True,
          vitconfig=_VIT, dvitconfig=dict(_VIT, layers=4))), "the decoder's layers=4 differs from the encoder's 2"),
])
def test_configs_of_other_variants_are_refused_in_one_line(tmp_path, model, message):
    path = _saved(tmp_path, {**_blob(), "config": {"model": model, "data": {"zero_mean": True}}}, "variant.pt")
    with pytest.raises(CheckpointError, match=message) as err:
        tokbench.load("bsq-vit-18bit", weights=str(path))
    assert "\n" not in str(err.value)


def test_ids_are_upstreams_most_significant_bit_first():
    tokenizer = tokbench.load("bsq-vit-18bit", weights=str(WEIGHTS))
    with torch.no_grad():
        z_BLD = tokenizer.quant_embed(tokenizer.encoder(X * 2 - 1))  # upstream's channel order
    bits = (z_BLD > 0).long()
    msb_first = (bits * 2 ** torch.arange(17, -1, -1)).sum(-1)  # upstream's basis, computed here
    assert np.array_equal(msb_first.reshape(2, 6, 6).numpy(), EXPECTED["indices"])
    lsb_first = bits_to_ids(bits)  # tokbench's layout without the reversal
    assert (lsb_first.reshape(2, 6, 6).numpy() == EXPECTED["indices"]).mean() < 0.1


def test_the_containers_objects_are_never_unpickled(tmp_path):
    with pytest.raises(CheckpointError, match="omegaconf"):
        torch_load_safely(WEIGHTS)  # without the stand-ins: the training config's class is refused
    blob = _blob()
    assert type(blob["config"]) is ReleasedClassStandIn  # no OmegaConf object: its data only
    config = bsq_vit.plain(blob["config"])
    assert config["data"]["zero_mean"] is True and config["model"]["params"]["vitconfig"]["heads"] == 12
    assert config["model"]["params"]["clamp_range"] == [-1, 1] and config["loss"]["params"]["disc_weight"] == 0.1

    class Payload:
        def __reduce__(self):
            return (print, ("ran code",))

    evil = tmp_path / "evil.pt"
    torch.save({"ema_state_dict": blob["ema_state_dict"], "args": Payload()}, evil)
    with pytest.raises(CheckpointError, match="weights-only.*Unsupported global: GLOBAL print"):
        tokbench.load("bsq-vit-18bit", weights=str(evil))


def test_a_best_fid_copy_with_a_numpy_float_loads(tmp_path):
    path = _saved(tmp_path, {**_blob(), "best_fid": np.float64(1.23)}, "checkpoint_best.pt")
    assert np.array_equal(tokbench.load("bsq-vit-18bit", weights=str(path)).encode(X).ids.numpy(), EXPECTED["indices"])


def test_a_single_process_save_without_the_ddp_prefix_loads(tmp_path):
    blob = _blob()
    plain = {k[len("module.module."):]: v for k, v in blob["ema_state_dict"].items()}
    path = _saved(tmp_path, {"state_dict": {}, "ema_state_dict": plain})
    assert np.array_equal(tokbench.load("bsq-vit-18bit", weights=str(path)).encode(X).ids.numpy(), EXPECTED["indices"])


def test_another_id_layout_in_the_file_is_refused(tmp_path):
    blob = _blob()
    ema = dict(blob["ema_state_dict"])
    ema["module.module.quantize.basis"] = 2 ** torch.arange(18)  # least significant first
    with pytest.raises(CheckpointError, match="quantize.basis .*expected the powers of two from 2\\*\\*17 down to 1"):
        tokbench.load("bsq-vit-18bit", weights=str(_saved(tmp_path, {**blob, "ema_state_dict": ema})))


def test_36_bit_codes_are_refused_in_one_line(tmp_path):
    blob = _blob()
    ema = dict(blob["ema_state_dict"])
    p = "module.module."
    ema[p + "quant_embed.weight"] = torch.zeros(36, 36)
    ema[p + "quant_embed.bias"] = torch.zeros(36)
    ema[p + "post_quant_embed.weight"] = torch.zeros(36, 36)
    ema[p + "quantize.basis"] = 2 ** torch.arange(35, -1, -1)
    with pytest.raises(CheckpointError, match="36-bit codes are not supported.*at most 24 bits") as err:
        tokbench.load("bsq-vit-18bit", weights=str(_saved(tmp_path, {**blob, "ema_state_dict": ema})))
    assert "\n" not in str(err.value)


def test_missing_tensors_and_containers_are_one_line_errors(tmp_path):
    blob = _blob()
    ema = {k: v for k, v in blob["ema_state_dict"].items() if "post_quant_embed" not in k}
    with pytest.raises(CheckpointError, match="missing keys.*post_quant_embed") as err:
        tokbench.load("bsq-vit-18bit", weights=str(_saved(tmp_path, {**blob, "ema_state_dict": ema})))
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="no ema_state_dict or state_dict in the file"):
        tokbench.load("bsq-vit-18bit", weights=str(_saved(tmp_path, {"model": {}}, "other.pt")))
    with pytest.raises(CheckpointError, match="no such file"):
        tokbench.load("bsq-vit-18bit", weights=str(tmp_path / "absent.pt"))


def test_only_the_learned_grid_size_is_encoded():
    tokenizer = tokbench.load("bsq-vit-18bit", weights=str(WEIGHTS))
    with pytest.raises(ValueError, match="works on 48x48 images only .* got 64x64"):
        tokenizer.encode(torch.rand(1, 3, 64, 64))
    tokens = tokenizer.encode(X[:, :, :45, :46])  # padded to the patch multiple: the grid, cropped back
    assert tokens.ids.shape == (2, 6, 6) and tokenizer.decode(tokens).shape == (2, 3, 45, 46)
    with pytest.raises(ValueError, match="decodes a 6x6 grid of ids per image, got ids of shape \\(2, 5, 6\\)"):
        tokenizer.decode(Tokens(tokens.layout, (48, 48), ids=tokens.ids[:, :5]))
    with pytest.raises(ValueError, match="ids must lie in \\[0, 262144\\)"):
        tokenizer.decode(Tokens(tokens.layout, (48, 48), ids=tokens.ids + 2 ** 18))


def test_convert_gives_a_plain_bsq_vit_checkpoint(tmp_path):
    assert main(["convert", "bsq-vit-18bit", "--weights", str(WEIGHTS), str(tmp_path / "ckpt")]) == 0
    plain = tokbench.load(tmp_path / "ckpt")
    assert plain.family == "bsq_vit"
    assert np.array_equal(plain.encode(X).ids.numpy(), EXPECTED["indices"])


def test_the_released_model_trains_with_bsq_losses():
    tokenizer = tokbench.load("bsq-vit-18bit", weights=str(WEIGHTS)).train()
    out = tokenizer.autoencode(X)
    assert set(out.losses) == {"entropy"}  # the release trains without a commitment loss (beta 0)
    (out.reconstruction.square().mean() + sum(out.losses.values())).backward()
    assert tokenizer.encoder.conv1.weight.grad.abs().sum() > 0  # straight through the sign

