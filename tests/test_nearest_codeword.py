"""`tokbench.ops.nearest_codeword` (the PyTorch path) against a float64 brute-force reference."""
import importlib

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


@pytest.mark.parametrize("pick", ["mask", "two_minima"])
@pytest.mark.parametrize("rows_per_chunk", [1, 7, 256, None])  # None: the device default (one chunk here)
def test_results_do_not_depend_on_the_chunking_or_the_pick(monkeypatch, pick, rows_per_chunk):
    module = importlib.import_module("tokbench.ops.nearest_codeword")

    if pick == "two_minima":  # the accelerators' pick, run on the CPU
        monkeypatch.setitem(module.PICK_BY_DEVICE, "cpu", module._pick_by_two_minima)
    torch.manual_seed(0)
    c = torch.randn(500, 12)
    c[300] = c[100]  # an exact duplicate: its row must go to the lower index
    z = torch.cat([torch.randn(600, 12), c[100:101] + 1e-4])
    chunk = None if rows_per_chunk is None else rows_per_chunk * 4 * c.shape[0]
    idx, dist = nearest_codeword_torch(z, c, chunk_bytes=chunk)
    ref_idx, d = reference(z, c)
    assert torch.equal(idx, ref_idx)
    assert int(idx[-1]) == 100
    assert torch.allclose(dist.double(), d.gather(1, ref_idx[:, None]).squeeze(1), rtol=1e-5, atol=1e-6)


def test_near_ties_are_gathered_once_not_per_chunk(monkeypatch):
    # Reading a result back (`nonzero`) stalls a GPU until it catches up: once per search at most.
    calls = []
    real = torch.Tensor.nonzero

    def spy(self, *args, **kwargs):
        calls.append(self.shape)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "nonzero", spy)
    torch.manual_seed(0)
    z, c = torch.randn(2000, 8), torch.randn(256, 8)
    idx, _ = nearest_codeword_torch(z, c, chunk_bytes=16 * 4 * 256)  # 125 chunks
    assert len(calls) == 1
    assert torch.equal(idx, reference(z, c)[0])


def test_chunk_sizes_follow_the_device():
    from tokbench.ops.nearest_codeword import (ACCELERATOR_CHUNK_BYTES, ACCELERATOR_CHUNK_SHARE,
                                               ACCELERATOR_MIN_CHUNK_BYTES, CPU_CHUNK_BYTES, default_chunk_bytes)

    assert default_chunk_bytes(torch.device("cpu"), 262144, 16384) == CPU_CHUNK_BYTES <= 16 * 2**20
    gpu = torch.device("cuda")
    assert default_chunk_bytes(gpu, 262144, 16384) == ACCELERATOR_CHUNK_BYTES >= 128 * 2**20
    mid = default_chunk_bytes(gpu, 65536, 4096)  # 1 GiB of scores in all: a 1/16 share of them
    assert mid == 65536 * 4096 * 4 // ACCELERATOR_CHUNK_SHARE <= 0.1 * 65536 * 4096 * 4
    assert default_chunk_bytes(gpu, 100, 100) == ACCELERATOR_MIN_CHUNK_BYTES


def test_chunk_size_environment_override(monkeypatch):
    from tokbench.ops.nearest_codeword import default_chunk_bytes

    monkeypatch.setenv("TOKBENCH_NN_CHUNK_BYTES", "12345")
    assert default_chunk_bytes(torch.device("cuda"), 262144, 16384) == 12345


@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_bf16_gemm_is_exact_on_bf16_values(offset):
    # bf16 products are exact in fp32: the uncentered bf16 GEMM plus the re-rank gives the float64
    # answer on the bf16 values, ties included, even for a codebook far from the origin.
    torch.manual_seed(1)
    c = (offset + torch.randn(700, 24)).bfloat16()
    c[600] = c[5]
    z = torch.cat([(offset + torch.randn(900, 24)).bfloat16(), c[5:6]])
    idx, dist = nearest_codeword_torch(z, c, gemm_dtype=torch.bfloat16, chunk_bytes=64 * 4 * 700)
    ref_idx, d = reference(z.float(), c.float())
    assert torch.equal(idx, ref_idx) and int(idx[-1]) == 5
    assert torch.allclose(dist.double(), d.gather(1, ref_idx[:, None]).squeeze(1), rtol=1e-5, atol=1e-4)


def test_bf16_split_of_squared_norms_is_exact():
    from tokbench.ops.nearest_codeword import _split_bf16

    x = torch.randn(10000).exp() * 37.3
    assert torch.equal(_split_bf16(x).float().sum(1), x)


def test_bf16_gemm_refuses_other_inputs():
    with pytest.raises(ValueError, match="bf16 z and codebook"):
        nearest_codeword_torch(torch.randn(4, 8), torch.randn(16, 8), gemm_dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="gemm_dtype"):
        nearest_codeword_torch(torch.randn(4, 8), torch.randn(16, 8), gemm_dtype=torch.float16)


def test_cuda_dispatch_follows_the_regime_table():
    from tokbench.ops.nearest_codeword import CUDA_REGIMES, cuda_regime

    assert cuda_regime(torch.float32, 8) == "cuda_ext"  # fused 2.3-3.6x faster on the H200
    assert cuda_regime(torch.float32, 256) == "torch_chunked"  # fused 0.07x
    assert cuda_regime(torch.bfloat16, 256) == "torch_gemm_bf16"  # fused 0.21x
    assert cuda_regime(torch.bfloat16, 32) == "torch_gemm_bf16"  # fused 0.70-0.79x
    for dtype in (torch.float32, torch.float16, torch.bfloat16):  # every dtype covers every D
        assert any(r[0] == dtype and r[1] == float("inf") for r in CUDA_REGIMES)
    assert active_backend("cuda", d=256) == "torch_chunked"
    assert active_backend("cuda", d=64, dtype=torch.bfloat16) == "torch_gemm_bf16"


def test_the_fp32_gemm_turns_tf32_off_and_restores_it():
    from tokbench.ops.nearest_codeword import _exact_fp32_matmul

    flags = torch.backends.cuda.matmul
    saved = flags.allow_tf32
    flags.allow_tf32 = True
    try:
        with _exact_fp32_matmul(torch.device("cuda")):
            assert not flags.allow_tf32 and not flags.allow_bf16_reduced_precision_reduction
        assert flags.allow_tf32
    finally:
        flags.allow_tf32 = saved
