"""`tokbench.ops.nearest_codeword` (the PyTorch path) against a float64 brute-force reference."""
import pytest
import torch

from tokbench.ops import active_backend, nearest_codeword, nearest_codeword_torch


def reference(z, c, metric="l2"):
    z64, c64 = z.double(), c.double()
    if metric == "cosine":
        z64, c64 = torch.nn.functional.normalize(z64, dim=1), torch.nn.functional.normalize(c64, dim=1)
    d = torch.cdist(z64, c64).square()
    return d.argmin(dim=1), d


def assert_matches_reference(z, c, metric="l2", rel=1e-6):
    idx, dist = nearest_codeword(z, c, metric)
    ref_idx, d = reference(z, c, metric)
    best = d.gather(1, ref_idx[:, None]).squeeze(1)
    chosen = d.gather(1, idx[:, None]).squeeze(1)
    # exact, except where the two best distances are within `rel` of each other
    assert torch.all((idx == ref_idx) | (chosen <= best * (1 + rel) + 1e-12)), "wrong nearest codeword"
    expected = best / 2 if metric == "cosine" else best
    assert torch.allclose(dist.double(), expected, rtol=1e-4, atol=1e-5)
    return idx


@pytest.mark.parametrize("n, k, d", [(1000, 512, 8), (777, 1024, 32), (300, 4096, 12), (200, 333, 37), (64, 70, 256),
                                     (1, 50, 8), (50, 1, 8)])
def test_random_data_matches_float64_reference(n, k, d):
    torch.manual_seed(n + k + d)
    assert_matches_reference(torch.randn(n, d), torch.randn(k, d))


def test_codebook_far_from_the_origin_stays_exact():
    torch.manual_seed(0)
    c = 100 + 0.1 * torch.randn(4096, 32)
    z = 100 + 0.1 * torch.randn(2000, 32)
    idx = assert_matches_reference(z, c)
    assert torch.equal(idx, reference(z, c)[0])


def test_exact_ties_go_to_the_lowest_index():
    torch.manual_seed(0)
    base = torch.randn(10, 8)
    c = torch.cat([base, base, base, base, base, base])  # every codeword six times
    z = base[torch.randint(0, 10, (500,))] + 1e-3 * torch.randn(500, 8)
    idx, _ = nearest_codeword(z, c)
    assert int(idx.max()) < 10


def test_cosine_metric():
    torch.manual_seed(0)
    assert_matches_reference(torch.randn(500, 12), torch.randn(300, 12) * 5, metric="cosine")


def test_half_precision_inputs_match_the_reference_on_rounded_values():
    torch.manual_seed(0)
    z, c = torch.randn(400, 16).bfloat16(), torch.randn(256, 16).bfloat16()
    idx, dist = nearest_codeword(z, c)
    assert dist.dtype == torch.float32
    ref, _ = reference(z.float(), c.float())
    d = torch.cdist(z.double(), c.double()).square()
    assert torch.all((idx == ref) | (d.gather(1, idx[:, None]) <= d.gather(1, ref[:, None]) * (1 + 1e-6)).squeeze(1))


def test_memory_stays_bounded_by_the_chunk_size(monkeypatch):
    seen = []
    real_empty = torch.empty

    def spy(*shape, **kw):
        t = real_empty(*shape, **kw)
        seen.append(t.numel())
        return t

    monkeypatch.setattr(torch, "empty", spy)
    z, c = torch.randn(20000, 8), torch.randn(4096, 8)
    nearest_codeword_torch(z, c, chunk_bytes=1 << 20)
    assert max(seen) <= max(20000, (1 << 20) // 4), "a buffer near N x K was allocated"


@pytest.mark.parametrize("z, c, message", [
    (torch.full((4, 8), float("nan")), torch.randn(16, 8), "NaN or infinite"),
    (torch.randn(4, 8), torch.tensor([[float("inf")] * 8]), "NaN or infinite"),
    (torch.randn(4, 8), torch.randn(16, 9), "dimension 8 but the codebook has 9"),
    (torch.randn(4, 8, 1), torch.randn(16, 8), "must be 2D"),
    (torch.randn(4, 8), torch.randn(0, 8), "empty"),
    (torch.randint(0, 3, (4, 8)), torch.randn(16, 8), "float tensor"),
])
def test_bad_inputs_raise(z, c, message):
    with pytest.raises(ValueError, match=message):
        nearest_codeword(z, c)


def test_unknown_metric_raises():
    with pytest.raises(ValueError, match="metric"):
        nearest_codeword(torch.randn(2, 2), torch.randn(2, 2), metric="l1")


def test_cpu_tensors_take_the_chunked_path_and_autocast_is_ignored():
    assert active_backend("cpu") == "cpu_ext"
    z, c = torch.randn(100, 8), torch.randn(64, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        idx, dist = nearest_codeword(z, c)
    assert dist.dtype == torch.float32
    assert torch.equal(idx, reference(z, c)[0])


def test_a_fully_tied_codebook_is_re_ranked_in_bounded_steps():
    # Every codeword equal: every row is a near-tie over the whole codebook, and the
    # re-rank must walk all K candidates (in small steps here) and keep the lowest index.
    c = torch.ones(300, 5)
    z = torch.randn(40, 5)
    idx, dist = nearest_codeword_torch(z, c, chunk_bytes=4096)
    assert torch.equal(idx, torch.zeros(40, dtype=torch.long))
    assert torch.allclose(dist, (z - 1).square().sum(1))


def test_near_ties_within_fp32_rounding_pick_the_exact_winner():
    # Two codewords whose distances to z differ by far less than the expansion's rounding
    # error (|z| ~ 1e3): only the direct re-rank can tell them apart.
    torch.manual_seed(0)
    z = 1000 + torch.randn(64, 16)
    c = torch.cat([z[:1] + 1e-2, torch.randn(50, 16) * 3 + 1000, z[:1] - 1e-2 * 1.001])
    idx, _ = nearest_codeword_torch(z, c, chunk_bytes=1 << 12)
    ref = torch.cdist(z.double(), c.double()).argmin(1)
    assert torch.equal(idx, ref)


def test_mixed_dtypes_are_searched_in_fp32():
    # Under autocast the encoder output is bf16 while the codebook stays fp32.
    torch.manual_seed(0)
    z, c = torch.randn(300, 8).bfloat16(), torch.randn(128, 8)
    idx, dist = nearest_codeword(z, c)
    assert dist.dtype == torch.float32
    assert torch.equal(idx, reference(z.float(), c)[0])


def test_the_finite_check_never_syncs_a_cuda_device_unless_asked(monkeypatch):
    # `bool(isfinite(t).all())` on a CUDA tensor waits for the device: skipped there by default.
    from tokbench.ops.nearest_codeword import _check_finite_on_device

    monkeypatch.delenv("TOKBENCH_CHECK_FINITE", raising=False)
    assert _check_finite_on_device(torch.device("cpu"))
    assert not _check_finite_on_device(torch.device("cuda"))
    monkeypatch.setenv("TOKBENCH_CHECK_FINITE", "1")
    assert _check_finite_on_device(torch.device("cuda"))
