"""LFQ, BSQ and FSQ: exact id <-> code maps (every id of small codebooks), the documented
id layout, entropy terms against the published formulas computed here independently, the
families' ``quantizer=`` option, clear errors, and tiny training configs that learn."""
import importlib.util
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tokbench import registry
from tokbench.quantize import (LOSS_NAMES, BinarySphericalQuantizer, FiniteScalarQuantizer, LookupFreeQuantizer,
                               make_quantizer)
from tokbench.training.entropy import CodebookEntropy

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_tiny_families.py"


# -- id <-> code maps --------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [LookupFreeQuantizer, BinarySphericalQuantizer])
@pytest.mark.parametrize("bits", [1, 3, 8, 10])
def test_binary_ids_round_trip_over_every_id(cls, bits):
    q = cls(bits)
    ids = torch.arange(2 ** bits)
    codes = q.codes_from_ids(ids)
    assert torch.equal(q.ids_from_codes(codes), ids)
    assert torch.unique(codes, dim=0).shape[0] == 2 ** bits  # one code per id
    value = 1.0 if cls is LookupFreeQuantizer else 1 / math.sqrt(bits)
    assert torch.allclose(codes.abs(), torch.full_like(codes, value))
    # rounding a code gives the code itself, and its id
    assert torch.equal(q.assign(q.prepare(codes)), ids) and torch.allclose(q.round(q.prepare(codes)), codes)


def test_binary_id_layout_channel_0_is_the_least_significant_bit():
    q = LookupFreeQuantizer(5).eval()
    for c in range(5):
        z = -torch.ones(1, 5)
        z[0, c] = 0.3
        assert int(q.assign(z)) == 2 ** c
    torch.manual_seed(0)
    z_ND = torch.randn(300, 5)
    z_ND[0] = 0.0  # zero counts as negative
    expected = [sum(2 ** c for c in range(5) if float(z[c]) > 0) for z in z_ND]
    assert q.assign(z_ND).tolist() == expected
    assert q.lookup(torch.tensor([[0b00110]]), channel_dim=1).flatten().tolist() == [-1, 1, 1, -1, -1]


@pytest.mark.parametrize("levels", [[3], [8, 6, 5], [2, 3, 4, 5], [7, 5, 5, 5, 5]])
def test_fsq_ids_round_trip_over_every_id(levels):
    q = FiniteScalarQuantizer(levels)
    n = math.prod(levels)
    ids = torch.arange(n)
    codes = q.codes_from_ids(ids)
    assert q.codebook_size == n and torch.equal(q.ids_from_codes(codes), ids)
    assert torch.unique(codes, dim=0).shape[0] == n
    # channel 0 varies fastest (mixed radix); level k of L decodes to (k - L//2) / (L//2)
    grid = [[(k - L // 2) / (L // 2) for k in range(L)] for L in levels]
    expected = [list(reversed(c)) for c in itertools.product(*reversed(grid))]
    assert torch.allclose(codes, torch.tensor(expected, dtype=torch.float32))
    # saturated features land on the grid's corners: every channel at its lowest / highest level
    far = q.assign(q.prepare(torch.tensor([[-50.0] * len(levels), [50.0] * len(levels)])))
    assert far.tolist() == [0, n - 1]


def _fsq_reference(z, levels):
    """The paper's bound-and-round in float64 numpy, returning normalized codes."""
    L = np.asarray(levels, dtype=np.float64)
    half_l = (L - 1) * (1 + 1e-3) / 2
    offset = np.where(L % 2 == 0, 0.5, 0.0)
    shift = np.arctanh(offset / half_l)
    bounded = np.tanh(z + shift) * half_l - offset
    return np.round(bounded) / (L // 2)


@pytest.mark.parametrize("levels", [[8, 6, 5], [3, 3, 4]])
def test_fsq_codes_follow_the_papers_bound_and_round(levels):
    torch.manual_seed(0)
    q = FiniteScalarQuantizer(levels).eval()
    z = torch.randn(2, len(levels), 16, 16) * 2
    out = q(z)
    ref = _fsq_reference(z.permute(0, 2, 3, 1).double().numpy(), levels)
    assert np.allclose(out.z_q.permute(0, 2, 3, 1).numpy(), ref, atol=1e-6)
    assert torch.allclose(q.lookup(out.ids, channel_dim=1), out.z_q, atol=1e-6)
    assert out.losses == {}  # no commitment or entropy loss in FSQ


# -- entropy terms against the published formulas -----------------------------------------

def _entropy(p):
    return -(p * np.log(p + 1e-5)).sum()


def test_lfq_entropy_loss_is_magvit2s_formula_over_the_whole_codebook():
    torch.manual_seed(0)
    D, T = 4, 0.5
    q = LookupFreeQuantizer(D, temperature=T, entropy_weight=0.3, sample_entropy_weight=1.0,
                            codebook_entropy_weight=0.7).train()
    z = torch.randn(20, D).double()
    codes = np.array(list(itertools.product([-1.0, 1.0], repeat=D)))  # every code, any order
    logits = 2 * z.numpy() @ codes.T / T
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    sample = np.mean([-(row * np.log(row)).sum() for row in p])
    codebook = _entropy(p.mean(0))
    got_sample, got_codebook = q.entropies(z.float())
    assert abs(float(got_sample) - sample) < 1e-4 and abs(float(got_codebook) - codebook) < 1e-4
    loss = q.regularizers(z.float())["entropy"]
    assert abs(float(loss) - 0.3 * (sample - 0.7 * codebook)) < 1e-4


def test_bsq_entropy_is_the_papers_per_channel_factorisation():
    torch.manual_seed(1)
    D, tau = 6, 3.0
    q = BinarySphericalQuantizer(D, temperature=1 / tau, entropy_weight=1.0).train()
    z = torch.randn(50, D)
    u = z.double().numpy()
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    # q(c_d = +1/sqrt(D) | u) = sigmoid(tau * (2/sqrt(D)) * 2 u_d): logits 2 tau u.c per channel
    p_pos = 1 / (1 + np.exp(-4 * tau * u / math.sqrt(D)))
    h = lambda p: -(p * np.log(p) + (1 - p) * np.log(1 - p))  # noqa: E731
    sample = h(p_pos).sum(1).mean()
    codebook = sum(_entropy(np.array([m, 1 - m])) for m in p_pos.mean(0))
    got_sample, got_codebook = q.entropies(q.prepare(z))
    assert abs(float(got_sample) - sample) < 1e-4 and abs(float(got_codebook) - codebook) < 1e-4
    assert abs(float(q.regularizers(q.prepare(z))["entropy"]) - (sample - codebook)) < 1e-4


def test_grouping_keeps_the_per_sample_term_and_bounds_the_codebook_term():
    torch.manual_seed(2)
    z = torch.randn(64, 6)
    exact = LookupFreeQuantizer(6, temperature=0.5).entropies(z)
    pairs = LookupFreeQuantizer(6, temperature=0.5, entropy_group_bits=2).entropies(z)
    bits = LookupFreeQuantizer(6, temperature=0.5, entropy_group_bits=1).entropies(z)
    assert torch.allclose(exact[0], pairs[0], atol=1e-5) and torch.allclose(exact[0], bits[0], atol=1e-5)
    # the entropy of a joint distribution is at most the sum of its marginals' entropies
    assert exact[1] <= pairs[1] + 1e-5 <= bits[1] + 2e-5


def test_entropy_and_straight_through_gradients_reach_the_features():
    for q in (LookupFreeQuantizer(4), BinarySphericalQuantizer(4), FiniteScalarQuantizer([5, 5, 5, 5], beta=0.1)):
        z = torch.randn(2, 4, 3, 3, requires_grad=True)
        out = q.train()(z)
        assert set(out.losses) <= set(LOSS_NAMES)
        (out.z_q.square().sum() + sum(out.losses.values())).backward()
        assert z.grad.abs().sum() > 0
        z.grad = None
        if "entropy" in out.losses:
            out = q(z)
            out.losses["entropy"].backward()
            assert z.grad.abs().sum() > 0, type(q).__name__
    assert set(LookupFreeQuantizer(4).train()(torch.randn(1, 4, 2, 2)).losses) == {"commitment", "entropy"}


def test_hits_and_usage_are_counted_without_a_codebook_search():
    q = LookupFreeQuantizer(3).train()
    q(torch.tensor([[1.0, 1, 1], [-1, -1, -1]]).view(2, 3, 1, 1))
    assert q.codebooks() == [] and int(q.step) == 1
    assert float(q.usage_stats()["usage"]) == 2 / 8
    assert abs(float(q.usage_stats()["perplexity"]) - 2.0) < 1e-4


# -- the families' quantizer option ------------------------------------------------------------

FAMILY_CASES = [("lfq", 256, 8, {}), ("bsq", 256, 8, {}), ("fsq", 240, 3, {"levels": [8, 6, 5]})]


@pytest.mark.parametrize("family", ["vq", "residual_scale"])
@pytest.mark.parametrize("quantizer, size, dim, options", FAMILY_CASES)
def test_families_encode_decode_and_save_with_each_quantizer(tmp_path, family, quantizer, size, dim, options):
    from tokbench.checkpoint import load_directory, save_pretrained

    torch.manual_seed(0)
    tok = registry.create(f"{family}:size=tiny", quantizer=quantizer, codebook_size=size, code_dim=dim,
                          quantizer_options=options).eval()
    x = torch.rand(2, 3, 32, 32)
    tokens = tok.encode(x)
    assert tokens.layout.vocab_size == size and int(tokens.ids.max()) < size
    rec = tok.decode(tokens)
    assert torch.allclose(rec, tok.autoencode(x).reconstruction.clamp(0, 1), atol=1e-5)
    save_pretrained(tok, tmp_path / "ckpt")
    again = load_directory(tmp_path / "ckpt")
    assert again.config["quantizer"] == quantizer and torch.equal(again.encode(x).ids, tokens.ids)
    train_losses = tok.train().autoencode(x).losses
    assert set(train_losses) <= set(LOSS_NAMES) and ("entropy" in train_losses) == (quantizer != "fsq")


def test_residual_scale_entropy_reaches_the_encoder_at_every_scale():
    torch.manual_seed(0)
    tok = registry.create("residual_scale:size=tiny", quantizer="lfq", codebook_size=256, code_dim=8).train()
    tok.autoencode(torch.rand(2, 3, 32, 32)).losses["entropy"].backward()
    assert tok.quant_conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(quantizer="lfq", codebook_size=100, code_dim=8), "code_dim=8 needs codebook_size=256, got 100"),
    (dict(quantizer="fsq", codebook_size=240, code_dim=3), "needs quantizer_options.levels"),
    (dict(quantizer="fsq", codebook_size=256, code_dim=3, quantizer_options={"levels": [8, 6, 5]}),
     "set code_dim=3 and codebook_size=240"),
    (dict(quantizer="bsq", codebook_size=256, code_dim=8, dead_code_steps=5), "apply to quantizer='vq' only"),
    (dict(quantizer="lfq", codebook_size=256, code_dim=8, quantizer_options={"levels": [2]}),
     "quantizer_options for quantizer='lfq'.*levels"),
    (dict(quantizer="lfq", codebook_size=256, code_dim=8, quantizer_options={"entropy_group_bits": 3}),
     "entropy_group_bits must divide code_dim=8"),
    (dict(quantizer="rvq"), "quantizer must be one of vq, lfq, bsq, fsq"),
])
def test_bad_quantizer_options_say_what_is_expected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        registry.create("vq:size=tiny", **kwargs)


def test_lookup_refuses_ids_outside_the_grid_and_generic_entropy_points_to_the_own_term():
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 240\)"):
        make_quantizer("fsq", 240, 3, options={"levels": [8, 6, 5]}).lookup(torch.tensor([240]))
    tok = registry.create("vq:size=tiny", quantizer="lfq", codebook_size=256, code_dim=8)
    with pytest.raises(ValueError, match="quantizer_options.entropy_weight"):
        CodebookEntropy(tok)


# -- the shipped tiny configs learn ------------------------------------------------------------

def _benchmark_module():
    spec = importlib.util.spec_from_file_location("train_tiny_families", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("config, steps", [("vq_tiny_lfq", 25), ("vq_tiny_bsq", 25), ("vq_tiny_fsq", 25),
                                           ("residual_scale_tiny_lfq", 30)])
def test_tiny_grid_quantizer_configs_learn(tmp_path, config, steps):
    torch.set_num_threads(1)
    row = _benchmark_module().train_family(config.split("_tiny")[0], steps, tmp_path,
                                           ["--model.warmup_steps", "5", "--model.ema_decay", "0.9"], config=config)
    assert row["val_l1_last"] <= 0.9 * row["val_l1_first"], row
    assert row["usage"] >= 0.25, row


def test_entropy_terms_stay_fp32_under_bf16_autocast():
    torch.manual_seed(3)
    q = LookupFreeQuantizer(6).train()
    z = torch.randn(128, 6)
    plain = q.entropies(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = q.entropies(z)
    assert all(m.dtype == torch.float32 for m in mixed)
    assert torch.allclose(plain[0], mixed[0]) and torch.allclose(plain[1], mixed[1])
