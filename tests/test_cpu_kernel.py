"""The fused CPU nearest-codeword kernel (`cuda_ext/nearest_codeword_cpu.cpp`) against a float64 brute force.

The extension is compiled once per environment into its cache (about a minute on a 2-core
machine the first time); the module-scoped fixture loads it once per session. Every micro-kernel
this CPU can run (AVX-512, AVX2, portable) is forced in turn; one the CPU lacks is skipped with
the reason.
"""
import os
import warnings

import pytest
import torch
from helpers import fit_autoencoder

import tokbench
from tokbench.cuda_ext import cpu_loader
from tokbench.ops import active_backend, nearest_codeword, nearest_codeword_torch


@pytest.fixture(scope="module")
def ext():
    module = cpu_loader.load_extension()
    assert module is not None, f"the CPU kernel did not build: {cpu_loader.extension_status()}"
    return module


def reference_index(z, c, metric="l2"):
    """Lowest index of the float64 minimum of |z - c|^2 (1 - cos for cosine)."""
    z64, c64 = z.double(), c.double()
    if metric == "cosine":
        z64, c64 = torch.nn.functional.normalize(z64, dim=1), torch.nn.functional.normalize(c64, dim=1)
    d = (z64[:, None, :] - c64[None, :, :]).square().sum(-1)  # direct, not the expanded form
    return d.argmin(dim=1), d


SIMD_LEVELS = ["avx512", "avx2", "generic"]


@pytest.fixture(params=SIMD_LEVELS)
def simd(request, ext):
    if request.param not in ext.simd_levels():
        pytest.skip(f"this CPU cannot run the {request.param} kernel (it has: {', '.join(ext.simd_levels())})")
    return request.param


def check(ext, z, c, simd="auto"):
    idx, dist = ext.nearest_codeword_cpu(z, c, simd)
    ref_idx, d = reference_index(z, c)
    assert torch.equal(idx, ref_idx), f"{int((idx != ref_idx).sum())} rows differ from the float64 reference"
    assert dist.dtype == torch.float32
    assert torch.allclose(dist.double(), d.gather(1, ref_idx[:, None]).squeeze(1), rtol=1e-6, atol=1e-7)
    return idx


@pytest.mark.parametrize("d", [1, 3, 8, 17, 32, 100, 256])
def test_random_data_matches_the_float64_reference(ext, d, simd):
    torch.manual_seed(d)
    n, k = (300, 1000) if d <= 32 else (100, 300)  # K not a multiple of the 32-codeword panels
    check(ext, torch.randn(n, d), torch.randn(k, d), simd)


@pytest.mark.parametrize("n, k", [(1, 50), (50, 1), (1, 1), (2, 33), (97, 31), (13, 100)])
def test_edge_sizes(ext, n, k, simd):
    torch.manual_seed(n * 100 + k)
    for d in (5, 8):  # (13 rows: not a whole number of row groups of any micro-kernel)
        check(ext, torch.randn(n, d), torch.randn(k, d), simd)


@pytest.mark.parametrize("copies", [6, 40])  # 40: more near-ties than a row's list holds -> exact scan
def test_exact_duplicate_codewords_go_to_the_lowest_index(ext, copies, simd):
    torch.manual_seed(copies)
    base = torch.randn(10, 8)
    c = base.repeat(copies, 1)  # codeword j and j + 10, j + 20, ... are equal
    z = base[torch.randint(0, 10, (500,))] + 1e-3 * torch.randn(500, 8)
    idx = check(ext, z, c, simd)
    assert int(idx.max()) < 10


def test_a_fully_tied_codebook(ext, simd):
    z = torch.randn(40, 5)
    idx, dist = ext.nearest_codeword_cpu(z, torch.ones(300, 5), simd)
    assert torch.equal(idx, torch.zeros(40, dtype=torch.long))
    assert torch.allclose(dist, (z - 1).square().sum(1))


def test_near_ties_within_fp32_rounding_pick_the_exact_winner(ext, simd):
    # |z| ~ 1e3: the two candidates' distances differ far below the expansion's rounding error.
    torch.manual_seed(0)
    z = 1000 + torch.randn(64, 16)
    c = torch.cat([z[:1] + 1e-2, torch.randn(50, 16) * 3 + 1000, z[:1] - 1e-2 * 1.001])
    check(ext, z, c, simd)
    c_far = 100 + 0.1 * torch.randn(1024, 32)  # codebook far from the origin: centring keeps it exact
    check(ext, 100 + 0.1 * torch.randn(300, 32), c_far, simd)


def test_exact_ties_between_distinct_codewords_go_to_the_lowest_index(ext, simd):
    # Codewords mirrored about each row: exactly equal distances (in fp32 and in float64), and
    # the equal pair sits in different panels and lanes so every tile boundary is crossed.
    torch.manual_seed(1)
    z = torch.randint(-4, 5, (200, 8)).float()
    offsets = torch.zeros(8)
    offsets[0] = 1.0
    far = 50 + torch.randn(100, 8)
    c = torch.cat([far[:37], z[:1] + offsets, far[37:], z[:1] - offsets])  # indices 37 and 101 tie for row 0
    idx = check(ext, z, c, simd)
    assert int(idx[0]) == 37


def test_every_micro_kernel_returns_the_same_answer(ext):
    torch.manual_seed(3)
    z, c = torch.randn(1000, 8), torch.randn(3000, 8)
    answers = [ext.nearest_codeword_cpu(z, c, level) for level in ext.simd_levels()]
    for idx, dist in answers[1:]:
        assert torch.equal(idx, answers[0][0]) and torch.equal(dist, answers[0][1])


def test_the_micro_kernel_can_be_forced_by_environment(ext, monkeypatch):
    calls = []
    real = ext.nearest_codeword_cpu
    monkeypatch.setattr(cpu_loader, "load_extension", lambda: type("M", (), {
        "nearest_codeword_cpu": staticmethod(lambda z, c, level: calls.append(level) or real(z, c, level))}))
    z, c = torch.randn(20, 8), torch.randn(30, 8)
    cpu_loader.nearest_codeword_cpu(z, c, "l2")
    monkeypatch.setenv("TOKBENCH_CPU_SIMD", "generic")
    cpu_loader.nearest_codeword_cpu(z, c, "l2")
    assert calls == ["auto", "generic"]
    assert "generic (TOKBENCH_CPU_SIMD) kernel" in cpu_loader.extension_status()
    monkeypatch.setenv("TOKBENCH_CPU_SIMD", "sse9")
    with pytest.raises(ValueError, match="TOKBENCH_CPU_SIMD must be one of auto, avx512, avx2, generic, got 'sse9'"):
        cpu_loader.nearest_codeword_cpu(z, c, "l2")
    with pytest.raises(RuntimeError, match="simd must be 'auto', 'avx512', 'avx2' or 'generic'"):
        real(z, c, "sse9")


def test_the_kernels_this_cpu_has_and_the_one_auto_runs(ext):
    info = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    flags = info.split()
    expected = [lvl for lvl, has in (("avx512", "avx512f" in flags), ("avx2", "avx2" in flags and "fma" in flags))
                if has] + ["generic"]
    assert ext.simd_levels() == expected
    zen_3_or_4 = "AuthenticAMD" in info and "cpu family\t: 25" in info  # AVX-512 at half rate
    assert ext.simd_level() == ("avx2" if zen_3_or_4 and "avx512" in expected else expected[0])


def test_non_contiguous_inputs(ext):
    torch.manual_seed(0)
    z = torch.randn(400, 24)[:, ::2]  # strided columns
    c = torch.randn(12, 700).T  # transposed
    assert not z.is_contiguous() and not c.is_contiguous()
    check(ext, z, c)
    idx, _ = nearest_codeword(z, c)
    assert torch.equal(idx, reference_index(z, c)[0])


def test_one_and_two_threads_give_identical_results(ext):
    torch.manual_seed(0)
    z, c = torch.randn(5000, 8), torch.randn(2000, 8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ext.nearest_codeword_cpu(z, c)
        torch.set_num_threads(2)
        two = ext.nearest_codeword_cpu(z, c)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_the_op_dispatches_to_the_kernel_by_dimension(ext, monkeypatch):
    assert active_backend("cpu", d=8) == "cpu_ext"
    assert active_backend("cpu", d=cpu_loader.MAX_FUSED_DIM + 1) == "torch_chunked"
    calls = []
    real = cpu_loader.nearest_codeword_cpu
    monkeypatch.setattr(cpu_loader, "nearest_codeword_cpu", lambda *a: calls.append(a[0].shape) or real(*a))
    torch.manual_seed(0)
    for metric in ("l2", "cosine"):
        z, c = torch.randn(300, 12), torch.randn(200, 12) * 5
        idx, dist = nearest_codeword(z, c, metric)
        ref_idx, d = reference_index(z, c, metric)
        assert torch.equal(idx, ref_idx)
        best = d.gather(1, ref_idx[:, None]).squeeze(1)
        assert torch.allclose(dist.double(), best / 2 if metric == "cosine" else best, rtol=1e-5, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 encoder output, fp32 codebook
        z = torch.randn(100, 8).bfloat16()
        c = torch.randn(64, 8)
        assert torch.equal(nearest_codeword(z, c)[0], reference_index(z.float(), c)[0])
    assert len(calls) == 3
    nearest_codeword(torch.randn(10, 300), torch.randn(20, 300))  # long codewords: the GEMM path
    assert len(calls) == 3


def test_nan_and_inf_are_rejected_before_the_kernel(ext):
    with pytest.raises(ValueError, match="NaN or infinite"):
        nearest_codeword(torch.full((4, 8), float("nan")), torch.randn(16, 8))
    with pytest.raises(ValueError, match="NaN or infinite"):
        nearest_codeword(torch.randn(4, 8), torch.tensor([[float("inf")] * 8]))


def test_a_failed_build_falls_back_to_the_chunked_path_with_one_warning(monkeypatch):
    monkeypatch.setattr(cpu_loader, "_state", {"module": None, "error": None, "tried": False})

    def no_compiler(verbose=False, force=False):
        raise RuntimeError("command 'c++' failed: No such file or directory")

    monkeypatch.setattr(cpu_loader, "build_extension", no_compiler)
    z, c = torch.randn(50, 8), torch.randn(40, 8)
    with pytest.warns(UserWarning, match="CPU nearest-codeword kernel unavailable .*c\\+\\+"):
        idx, _ = nearest_codeword(z, c)
    assert torch.equal(idx, nearest_codeword_torch(z, c)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only once
        nearest_codeword(z, c)
    assert active_backend("cpu") == "torch_chunked"
    assert cpu_loader.extension_status().startswith("failed: RuntimeError: command 'c++' failed")
    monkeypatch.setenv("TOKBENCH_DISABLE_CPU_EXT", "1")
    assert "disabled" in cpu_loader.extension_status()


def _train_tiny_vq(steps: int) -> list[float]:
    torch.manual_seed(0)
    model = tokbench.create("vq:size=tiny")
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return fit_autoencoder(model, x, steps, lr=2e-3)


def test_vq_training_on_the_cpu_goes_through_the_kernel_and_matches_the_chunked_path(ext, monkeypatch):
    calls = []
    real = cpu_loader.nearest_codeword_cpu
    monkeypatch.setattr(cpu_loader, "nearest_codeword_cpu", lambda *a: calls.append(1) or real(*a))
    fused = _train_tiny_vq(6)
    assert calls, "the quantizer did not go through the fused CPU kernel"
    monkeypatch.setenv("TOKBENCH_DISABLE_CPU_EXT", "1")
    n = len(calls)
    chunked = _train_tiny_vq(6)
    assert len(calls) == n, "the switch did not turn the kernel off"
    assert fused[-1] < fused[0], "did not learn"
    # Both paths are exact, so they pick the same codes: the same losses up to float noise.
    assert fused == pytest.approx(chunked, rel=1e-4)
