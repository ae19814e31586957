"""FlowMo-Lo / FlowMo-Hi: upstream's encoder, LFQ ids and rectified-flow sampler, given the same noise.

Parity with FlowMo's own ``FlowMo`` (built by its ``build_model``, mup included) on two small
fixtures it computed (``tests/fixtures/make_flowmo_fixture.py``: random weights in the release's
``train.py`` container, Lo's 18 channels / 9 bits and Hi's 56 / 14; upstream's ``reconstruct``
after ``torch.manual_seed(7)``): the code, the ids, and the reconstructions end to end and from
upstream's ids, with the release sampler (25 ``pow_0.25`` steps, cfg 1.5 in its interval) and another
one (4 linear steps, no guidance). Upstream's code and ours agree bit for bit on the CPU (at 1 and 2
threads); the tolerances are the project's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tokbench
from tokbench import CheckpointError, Tokens
from tokbench.tokenizers.public import flowmo
from tokbench.tokenizers.public.flowmo_model import edm_to_flow_time, sampling_times

FIXTURES = Path(__file__).parent / "fixtures" / "flowmo"
EXPECTED = {r: np.load(FIXTURES / f"expected_{r}.npz") for r in ("lo", "hi")}
SMALL = dict(code_length=16, enc_axes=(2, 2, 4), dec_axes=(4, 4, 8), seed=7)  # what the file does not say
SEED = 7
TOL = 1e-4


def _weights(release: str) -> Path:
    return FIXTURES / f"flowmo_{release}_tiny.pth"


def _inputs(release: str) -> torch.Tensor:
    return torch.from_numpy(EXPECTED[release]["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255


def _load(release: str, **options):
    return tokbench.load(f"flowmo-{release}", weights=str(_weights(release)), **{**SMALL, **options})


@pytest.mark.parametrize("release", ["lo", "hi"])
def test_parity_with_the_upstream_code(release):
    expected, x = EXPECTED[release], _inputs(release)
    tokenizer = _load(release)
    assert np.abs(tokenizer.encode_code(x).numpy() - expected["code"]).max() <= TOL
    tokens = tokenizer.encode(x)
    assert tokens.ids.shape == expected["indices"].shape == (2, 16 * {"lo": 2, "hi": 4}[release])
    assert (tokens.ids.numpy() == expected["indices"]).mean() >= 0.999
    assert np.abs(tokenizer.decode(tokens).numpy() - expected["recon"]).max() <= TOL
    stored = Tokens(tokens.layout, tokens.image_size, ids=torch.from_numpy(expected["indices"]))
    assert np.abs(tokenizer.decode(stored).numpy() - expected["recon_from_indices"]).max() <= TOL


@pytest.mark.parametrize("release", ["lo", "hi"])
def test_another_sampler_matches_upstream_with_the_same_settings(release):
    tokenizer = _load(release, sample_steps=4, schedule="linear", cfg=1.0)
    recon = tokenizer.reconstruct(_inputs(release)).numpy()
    assert np.abs(recon - EXPECTED[release]["recon_linear"]).max() <= TOL
    assert np.abs(recon - EXPECTED[release]["recon"]).max() > 0.05  # the settings do change the samples


def test_ids_are_upstreams_lfq_layout():
    """id[b, t * fh + j] = sum_g [code[b, t, g * fh + j] > 0] * 2**g, computed here from upstream's code."""
    for release, bits in (("lo", 9), ("hi", 14)):
        code = EXPECTED[release]["code"]
        B, T, C = code.shape
        fh = C // bits
        positive = (code > 0).reshape(B, T, bits, fh).transpose(0, 1, 3, 2)  # (B, T, fh, bits)
        ids = (positive * (1 << np.arange(bits))).sum(-1).reshape(B, T * fh)
        assert np.array_equal(ids, EXPECTED[release]["indices"])
        layout = _load(release).layout_for(32, 32)
        assert (layout.num_tokens, layout.vocab_size) == (T * fh, 2 ** bits)


def test_noise_is_upstreams_seeded_draw_and_can_be_given():
    expected, x = EXPECTED["lo"], _inputs("lo")
    tokenizer = _load("lo")
    tokens = tokenizer.encode(x)
    given = tokenizer.decode(tokens, noise=torch.from_numpy(expected["noise"])).numpy()
    drawn = tokenizer.decode(tokens, generator=torch.Generator().manual_seed(SEED)).numpy()
    assert np.abs(given - expected["recon"]).max() <= TOL and np.array_equal(given, drawn)
    assert np.array_equal(tokenizer.decode(tokens).numpy(), given)  # seed=7: the same draw, at every call
    other = _load("lo", seed=8).decode(tokens).numpy()
    assert np.abs(other - given).max() > 0.1  # decoding samples: another seed, another image
    with pytest.raises(ValueError, match=r"noise must have shape \(B, 3, H_pad, W_pad\) = \(2, 3, 32, 32\)"):
        tokenizer.decode(tokens, noise=torch.zeros(2, 3, 16, 16))


def test_the_release_sampler_settings():
    """base.yaml's eval.sampling: 25 steps at t = (k / 25)**4, guidance 1.5 where t lies in the
    flow times of the EDM noise levels 0.17 and 1.02 -- steps k = 16..21 here."""
    tokenizer = tokbench.load("flowmo-lo", code_length=16, dec_width=32, dec_depth=1, enc_width=16, enc_depth=1,
                              enc_heads=2, dec_heads=2, enc_axes=(2, 2, 4), dec_axes=(4, 4, 8))
    cfg = tokenizer.config
    assert (cfg["sample_steps"], cfg["schedule"], cfg["cfg"], cfg["cfg_interval"]) == (25, "pow_0.25", 1.5, [0.17, 1.02])
    t, dt = sampling_times(25, "pow_0.25")
    k = np.arange(25, 0, -1)
    assert np.allclose(t.numpy(), (k / 25) ** 4, atol=1e-7) and abs(float(dt.sum()) - 1) < 1e-6
    guided = [int(kk) for kk, tt in zip(k, t) if edm_to_flow_time(0.17) <= float(tt) <= edm_to_flow_time(1.02)]
    assert guided == [21, 20, 19, 18, 17, 16]
    t_lin, dt_lin = sampling_times(4, "linear")
    assert t_lin.tolist() == [1.0, 0.75, 0.5, 0.25] and dt_lin.tolist() == [0.25] * 4


def test_the_ema_weights_are_the_ones_loaded(tmp_path):
    blob = torch.load(_weights("lo"), map_location="cpu", weights_only=True)
    torch.save({"total_steps": 1, "model_ema_state_dict": blob["model_state_dict"]}, tmp_path / "live.pth")
    live = tokbench.load("flowmo-lo", weights=str(tmp_path / "live.pth"), **SMALL).encode(_inputs("lo")).ids.numpy()
    assert (live == EXPECTED["lo"]["indices"]).mean() < 0.9
    torch.save({"total_steps": 1, "model_state_dict": blob["model_state_dict"]}, tmp_path / "no_ema.pth")
    with pytest.raises(CheckpointError, match=r"no state dict found \(looked for model_ema_state_dict ") as err:
        tokbench.load("flowmo-lo", weights=str(tmp_path / "no_ema.pth"), **SMALL)
    assert "\n" not in str(err.value)


def test_release_files_are_recognised_by_their_channels(tmp_path):
    for release in ("lo", "hi"):
        tokenizer = tokbench.load(_weights(release), **SMALL)
        assert tokenizer.upstream["name"] == f"flowmo-{release}"
    assert not flowmo.build_hi.recognizes(_weights("lo"))
    blob = torch.load(_weights("lo"), map_location="cpu", weights_only=True)
    state = dict(blob["model_ema_state_dict"])
    state[flowmo.CONTEXT_KEY] = torch.zeros(126, state[flowmo.CONTEXT_KEY].shape[1])  # neither 18 nor 56
    torch.save({**blob, "model_ema_state_dict": state}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="could be any of flowmo-hi, flowmo-lo"):
        tokbench.load(tmp_path / "other.pth")


def test_options_the_release_fixes_or_the_file_cannot_hold_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="option bits cannot be changed: the release fixes bits=9"):
        tokbench.load("flowmo-lo", bits=14)
    with pytest.raises(ValueError, match="schedule must be 'linear' or 'pow_P'"):
        _load("lo", schedule="cosine")
    with pytest.raises(ValueError, match="dec_axes=.* must be even sizes summing to the head dimension"):
        tokbench.load("flowmo-lo", weights=str(_weights("lo")), code_length=16, enc_axes=(2, 2, 4))
    with pytest.raises(CheckpointError, match="context_dim 18 is not a multiple of flowmo-hi's 14 bits"):
        tokbench.load("flowmo-hi", weights=str(_weights("lo")), **SMALL)
    with pytest.raises(ValueError, match="option enc_width=32 cannot be changed"):
        _load("lo", enc_width=32)


def test_convert_keeps_the_model_and_the_sampler(tmp_path):
    tokenizer = _load("hi", sample_steps=4, schedule="linear", cfg=1.0)
    tokenizer.save_pretrained(str(tmp_path / "ckpt"))
    plain = tokbench.load(tmp_path / "ckpt")
    assert plain.family == "flowmo" and plain.config == tokenizer.config
    recon = plain.reconstruct(_inputs("hi")).numpy()
    assert np.abs(recon - EXPECTED["hi"]["recon_linear"]).max() <= TOL


def test_sizes_that_are_not_a_multiple_of_the_patch_are_padded_and_cropped():
    tokenizer = _load("lo", sample_steps=2)
    x = _inputs("lo")[:, :, :30, :27]
    tokens = tokenizer.encode(x)
    assert tokens.ids.shape == (2, 32) and tokens.image_size == (30, 27)
    out = tokenizer.decode(tokens)
    assert out.shape == (2, 3, 30, 27) and 0 <= float(out.min()) and float(out.max()) <= 1
