"""The CUDA extension: compile-checked with nvcc wherever nvcc exists; run where a GPU exists."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from tokbench.cuda_ext import loader
from tokbench.ops import active_backend, nearest_codeword, nearest_codeword_torch

KERNELS = sorted(Path(loader.__file__).parent.glob("*.cu"))
NVCC = shutil.which("nvcc") or (str(Path(loader.cuda_home() or "/nonexistent") / "bin" / "nvcc")
                                if loader.cuda_home() and (Path(loader.cuda_home()) / "bin" / "nvcc").exists() else None)
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.skipif(NVCC is None, reason="nvcc not found: the CUDA sources cannot be compile-checked here")
@pytest.mark.parametrize("arch", ["sm_90", "sm_80"])
@pytest.mark.parametrize("kernel", KERNELS, ids=lambda p: p.name)
def test_kernel_compiles_with_warnings_as_errors(kernel, arch, tmp_path):
    out = subprocess.run([NVCC, "-c", str(kernel), "-o", str(tmp_path / "k.o"), f"-arch={arch}", "-O3", "-std=c++17",
                          "-Werror", "all-warnings", "-Xcompiler", "-Wall,-Wextra,-Werror"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr


def test_status_never_builds_and_honours_the_switch(monkeypatch):
    monkeypatch.setenv("TOKBENCH_DISABLE_CUDA_EXT", "1")
    assert "disabled" in loader.extension_status()
    assert loader.load_extension() is None
    assert active_backend("cuda") == "torch_chunked"
    monkeypatch.delenv("TOKBENCH_DISABLE_CUDA_EXT")
    if not torch.cuda.is_available():
        assert loader.extension_status().startswith("not built: no CUDA device")


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n, k, d", [(4096, 16384, 8), (1000, 4096, 32), (333, 1000, 37), (256, 512, 256), (1, 7, 8),
                                     (500, 3000, 3), (257, 1025, 17), (129, 300, 100)])
def test_extension_matches_the_torch_path(n, k, d, dtype):
    # The extension is called directly: `nearest_codeword` sends some (dtype, D) to other
    # backends (`CUDA_REGIMES`), and this test is about the kernel itself.
    torch.manual_seed(0)
    z, c = torch.randn(n, d, device="cuda").to(dtype), torch.randn(k, d, device="cuda").to(dtype)
    assert loader.load_extension() is not None, loader.extension_status()
    idx, dist = loader.nearest_codeword_cuda(z, c, "l2")
    ref_idx, ref_dist = nearest_codeword_torch(z.cpu(), c.cpu())
    d64 = torch.cdist(z.double().cpu(), c.double().cpu()).square()
    best, chosen = d64.gather(1, ref_idx[:, None]), d64.gather(1, idx.cpu()[:, None])
    assert torch.all((idx.cpu() == ref_idx) | (chosen <= best * (1 + 1e-6)).squeeze(1))
    assert torch.allclose(dist.cpu(), ref_dist, rtol=1e-4, atol=1e-5)
    again, _ = loader.nearest_codeword_cuda(z, c, "l2")
    assert torch.equal(idx, again), "not deterministic"


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d", [8, 32, 64, 256])
def test_dispatch_follows_the_regime_table_and_stays_exact(d, dtype):
    from tokbench.ops.nearest_codeword import cuda_regime

    torch.manual_seed(1)
    z, c = torch.randn(777, d, device="cuda").to(dtype), torch.randn(3001, d, device="cuda").to(dtype)
    assert active_backend("cuda", d, dtype) == cuda_regime(dtype, d)
    idx, _ = nearest_codeword(z, c)
    d64 = torch.cdist(z.double().cpu(), c.double().cpu()).square()
    best = d64.min(1).values
    assert torch.all(d64.gather(1, idx.cpu()[:, None]).squeeze(1) <= best * (1 + 1e-6))


@pytest.mark.cuda
@requires_cuda
def test_ties_and_offset_codebooks_on_the_gpu():
    base = torch.randn(10, 8, device="cuda")
    idx, _ = nearest_codeword(base.repeat(5, 1)[:10] + 0, base.repeat(6, 1))
    assert int(idx.max()) < 10
    c = 100 + 0.1 * torch.randn(4096, 32, device="cuda")
    z = 100 + 0.1 * torch.randn(2000, 32, device="cuda")
    assert torch.equal(nearest_codeword(z, c)[0].cpu(), torch.cdist(z.double(), c.double()).argmin(1).cpu())


@pytest.mark.cuda
@requires_cuda
def test_vq_training_step_on_gpu_uses_the_extension(monkeypatch):
    import tokbench

    calls = []
    real = loader.nearest_codeword_cuda
    monkeypatch.setattr(loader, "nearest_codeword_cuda", lambda *a: calls.append(1) or real(*a))
    model = tokbench.create("vq:size=tiny").cuda().train()
    x = torch.rand(4, 3, 64, 64, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model.autoencode(x)
    ((out.reconstruction - x).square().mean() + sum(out.losses.values())).backward()
    assert calls, "the quantizer did not go through the CUDA extension"


@pytest.mark.skipif(NVCC is None or loader.cuda_home() is None, reason="no CUDA toolkit: the extension cannot be built here")
def test_full_extension_builds_and_imports_without_a_gpu(tmp_path):
    # The binding (.cpp against PyTorch's headers) and the kernel, linked into the module
    # that `tokbench build-ext` produces; importing it needs no GPU.
    env = {**os.environ, "TOKBENCH_EXT_DIR": str(tmp_path)}
    code = "from tokbench.cuda_ext import loader; m = loader.build_extension(['9.0']); print(m.nearest_codeword.__doc__)"
    out = subprocess.run([os.sys.executable, "-c", code], capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "fused nearest-codeword search" in out.stdout


@pytest.mark.cuda
@requires_cuda
def test_mixed_dtypes_and_long_codewords_on_the_gpu():
    # bf16 encoder output against an fp32 codebook (autocast), and D beyond the tiles.
    torch.manual_seed(0)
    z, c = torch.randn(500, 8, device="cuda").bfloat16(), torch.randn(300, 8, device="cuda")
    idx, dist = nearest_codeword(z, c)
    assert dist.dtype == torch.float32
    assert torch.equal(idx.cpu(), torch.cdist(z.double(), c.double()).argmin(1).cpu())
    d = loader.load_extension().max_code_dim() + 5
    z, c = torch.randn(64, d, device="cuda"), torch.randn(100, d, device="cuda")
    assert torch.equal(nearest_codeword(z, c)[0].cpu(), torch.cdist(z.double(), c.double()).argmin(1).cpu())


# -- dispatch and self-check, on CPU with stand-in kernels -------------------------------

class _FakeModule:
    """Stands in for the compiled extension: a correct FMA kernel and a wrong tensor-core one."""

    def __init__(self, tensor_cores_wrong: bool = True, fma_wrong: bool = False):
        self.calls: list[bool] = []
        self.tensor_cores_wrong, self.fma_wrong = tensor_cores_wrong, fma_wrong

    def nearest_codeword(self, z, c, tensor_cores=False):
        self.calls.append(tensor_cores)
        idx, dist = nearest_codeword_torch(z, c)
        if (self.tensor_cores_wrong and tensor_cores) or (self.fma_wrong and not tensor_cores):
            idx = (idx + 1) % c.shape[0]
        return idx, dist

    def max_code_dim(self):
        return 300

    def tensor_core_dims(self):
        return (64, 256)


@pytest.fixture
def fake_extension(monkeypatch):
    def install(module):
        monkeypatch.setattr(loader, "load_extension", lambda: module)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
        monkeypatch.setattr(loader, "_verified", {})
        return module
    return install


def test_self_check_accepts_a_correct_kernel_and_refuses_a_wrong_one_once(monkeypatch):
    monkeypatch.setattr(loader, "_verified", {})
    assert loader.self_check(nearest_codeword_torch, "reference", torch.float32, 16, torch.device("cpu"))
    calls = []

    def wrong(z, c):
        calls.append(1)
        idx, dist = nearest_codeword_torch(z, c)
        return (idx + 1) % c.shape[0], dist

    with pytest.warns(UserWarning, match=r"the broken kernel failed its self-check .*rows chose another codeword"):
        assert not loader.self_check(wrong, "broken", torch.float32, 16, torch.device("cpu"))
    assert not loader.self_check(wrong, "broken", torch.float32, 16, torch.device("cpu"))
    assert len(calls) == 1, "the verdict is cached per (path, dtype, D, device)"

    def crashes(z, c):
        raise RuntimeError("too many resources requested for launch")

    with pytest.warns(UserWarning, match="too many resources"):
        assert not loader.self_check(crashes, "crashing", torch.float32, 16, torch.device("cpu"))


def test_a_tensor_core_kernel_that_fails_its_check_falls_back_to_the_fma_kernel(fake_extension):
    module = fake_extension(_FakeModule(tensor_cores_wrong=True))
    z, c = torch.randn(50, 64).bfloat16(), torch.randn(90, 64).bfloat16()
    with pytest.warns(UserWarning, match="tensor-core kernel failed its self-check"):
        idx, _ = loader.nearest_codeword_cuda(z, c, "l2")
    assert torch.equal(idx, nearest_codeword_torch(z, c)[0])
    assert module.calls[-1] is False, "the real search went to the FMA kernel"


def test_tensor_cores_only_for_half_precision_in_their_dimension_range(fake_extension):
    module = fake_extension(_FakeModule(tensor_cores_wrong=False))
    for dtype, d, expect in [(torch.bfloat16, 64, True), (torch.float16, 256, True), (torch.float32, 128, False),
                             (torch.bfloat16, 32, False), (torch.bfloat16, 257, False)]:
        module.calls.clear()
        z, c = torch.randn(20, d).to(dtype), torch.randn(30, d).to(dtype)
        idx, _ = loader.nearest_codeword_cuda(z, c, "l2")
        assert module.calls[-1] is expect, (dtype, d)
        assert torch.equal(idx, nearest_codeword_torch(z, c)[0])


def test_both_kernels_refused_means_the_pytorch_path(fake_extension):
    module = fake_extension(_FakeModule(tensor_cores_wrong=True, fma_wrong=True))
    z, c = torch.randn(40, 64).half(), torch.randn(70, 64).half()
    with pytest.warns(UserWarning):
        idx, dist = loader.nearest_codeword_cuda(z, c, "cosine")
    ref_idx, ref_dist = nearest_codeword_torch(z, c, "cosine")
    assert torch.equal(idx, ref_idx) and torch.allclose(dist, ref_dist, atol=1e-6)
    with pytest.warns(UserWarning):  # half precision: the tensor-core and FMA checks, both refused
        assert torch.equal(loader.nearest_codeword_cuda(z, c, "l2")[0], nearest_codeword_torch(z, c)[0])
    assert module.calls == [False, True, False]  # fp32 FMA check (cosine), then half: tensor cores, FMA
    loader.nearest_codeword_cuda(z, c, "l2")
    assert len(module.calls) == 3, "refused kernels are not tried again"


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n, k, d", [(4096, 16384, 256), (1000, 4097, 64), (129, 65, 72), (1, 3, 200)])
def test_tensor_core_kernel_matches_the_torch_path(n, k, d, dtype):
    # Called directly, so a kernel that would fail the self-check fails here loudly.
    module = loader.load_extension()
    torch.manual_seed(1)
    z, c = torch.randn(n, d, device="cuda").to(dtype), torch.randn(k, d, device="cuda").to(dtype)
    idx, dist = module.nearest_codeword(z, c, True)
    ref_idx, ref_dist = nearest_codeword_torch(z.cpu(), c.cpu())
    d64 = torch.cdist(z.double().cpu(), c.double().cpu()).square()
    chosen, best = d64.gather(1, idx.cpu()[:, None]), d64.gather(1, ref_idx[:, None])
    assert torch.all((idx.cpu() == ref_idx) | (chosen <= best * (1 + 1e-6)).squeeze(1))
    assert torch.allclose(dist.cpu(), ref_dist, rtol=1e-4, atol=1e-5)
    dup = torch.cat([c[:5], c[:5]])  # exact duplicates: the lower index wins
    assert int(module.nearest_codeword(c[:5].contiguous(), dup, True)[0].max()) < 5


# -- scripts/gpu_check.sh, as far as a machine without a GPU can check it ---------------------

GPU_CHECK = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


def test_gpu_check_script_parses_and_names_its_steps():
    assert subprocess.run(["bash", "-n", str(GPU_CHECK)], capture_output=True).returncode == 0
    text = GPU_CHECK.read_text()
    for needed in ("build-ext --cuda-only", "pytest -q -m cuda", "--gpu-grid", "vq_small", "--image-size 256",
                   "--profile-search", 'OUT=${OUT:-'):
        assert needed in text, needed


def test_gpu_check_without_a_gpu_says_so_in_one_line_and_fails(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OUT": str(tmp_path / "out"), "PYTHON": os.sys.executable}
    out = subprocess.run(["bash", str(GPU_CHECK)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0], out.stderr
    assert (tmp_path / "out" / "no_gpu.txt").read_text().startswith("gpu_check: no CUDA GPU")


def test_gpu_check_benchmark_and_training_options_exist():
    # The options the script passes are accepted (parsed only: the runs themselves need the GPU).
    root = GPU_CHECK.parents[1]
    for script, opts in (("benchmarks/nearest_codeword.py", ["--gpu-grid", "--paths", "--repeats"]),
                         ("benchmarks/train_throughput.py", ["--image-size", "--profile-search", "--accelerator"])):
        out = subprocess.run([os.sys.executable, str(root / script), "--help"], capture_output=True, text=True,
                             timeout=120, cwd=root)
        assert out.returncode == 0, out.stderr[-2000:]
        for opt in opts:
            assert opt in out.stdout, (script, opt)
