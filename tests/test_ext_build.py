"""JIT builds of the fused kernels (`tokbench.cuda_ext.jit`): a cache folder per environment and
source hash, the build message, remembered failures, and a bounded, interruptible wait on the
build lock. The compiler is replaced by a stand-in except where a real build is the point."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from tokbench.cuda_ext import cpu_loader, jit
from tokbench.ops import nearest_codeword, nearest_codeword_torch


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty extensions cache, and a CPU loader that has tried nothing in this process."""
    monkeypatch.setenv("TOKBENCH_EXT_DIR", str(tmp_path / "ext"))
    monkeypatch.setattr(cpu_loader, "_state", {"module": None, "error": None, "tried": False})
    return tmp_path / "ext"


def fake_compiler(calls):
    """A stand-in for the C++ build: records the call, leaves a library file, returns a module-like object."""
    def compile_(folder, verbose):
        calls.append(folder)
        assert not (folder / "lock").exists(), "torch's stale lock file was not cleared before the build"
        (folder / f"{cpu_loader.NAME}.so").write_bytes(b"")
        return "the module"
    return compile_


def source_spec(tmp_path, text):
    source = tmp_path / "kernel.cpp"
    source.write_text(text)
    return jit.JitSpec(name="k", sources=(source,), flags=("-O3",), label="a test kernel", duration="≈0 s")


def test_the_cache_folder_depends_on_the_environment_and_the_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKBENCH_EXT_DIR", str(tmp_path))
    first = jit.build_dir(source_spec(tmp_path, "int f() { return 1; }"))
    assert first.parent == tmp_path and first.name.startswith("k-")
    assert jit.build_dir(source_spec(tmp_path, "int f() { return 1; }")) == first  # stable
    assert jit.build_dir(source_spec(tmp_path, "int f() { return 2; }")) != first  # an edited source
    monkeypatch.setattr(sys, "prefix", "/some/other/venv")
    assert jit.build_dir(source_spec(tmp_path, "int f() { return 1; }")) != first  # another environment
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    spec = source_spec(tmp_path, "int f() { return 1; }")
    assert jit.build_dir(spec) != first and jit.build_dir(spec).parent == tmp_path


def test_a_first_build_says_so_with_its_time_and_later_loads_do_not_build(cache, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cpu_loader, "_compile", fake_compiler(calls))
    assert cpu_loader.extension_status().startswith("not built: compiled on first use")
    folder = jit.build_dir(cpu_loader.spec())
    folder.mkdir(parents=True)
    (folder / "lock").write_text("")  # left behind by a killed torch build
    assert cpu_loader.build_extension() == "the module"
    err = capsys.readouterr().err
    assert "tokbench: building the fused CPU kernel (once, ≈1-2 min)…" in err
    assert f"tokbench: built the fused CPU kernel in 0 s (cached in {folder})" in err
    assert calls == [folder]
    assert cpu_loader.extension_status() == f"built: {cpu_loader.NAME} in {folder} (loaded on first use)"
    monkeypatch.setattr(jit, "import_library", lambda spec, where: f"imported from {where}")
    assert cpu_loader.build_extension() == f"imported from {folder}"
    assert calls == [folder] and "building" not in capsys.readouterr().err


def test_a_failed_build_is_remembered_reported_and_retried_by_build_ext(cache, monkeypatch):
    def broken(folder, verbose):
        raise RuntimeError("Error building extension: c++: fatal error: no input files")

    monkeypatch.setattr(cpu_loader, "_compile", broken)
    with pytest.warns(UserWarning, match="CPU nearest-codeword kernel unavailable .*no input files"):
        assert cpu_loader.load_extension() is None
    monkeypatch.setattr(cpu_loader, "_state", {"module": None, "error": None, "tried": False})  # a new process
    assert cpu_loader.extension_status().startswith("failed: RuntimeError: Error building extension")
    assert cpu_loader.planned_backend(8) == "torch_chunked"
    calls = []
    monkeypatch.setattr(cpu_loader, "_compile", fake_compiler(calls))
    with pytest.raises(jit.EarlierBuildFailed, match="an earlier build; 'tokbench build-ext' retries"):
        cpu_loader.build_extension()
    assert calls == []  # no minute-long rebuild in every process
    assert cpu_loader.build_extension(force=True) == "the module"
    assert cpu_loader.extension_status().startswith("built: ")


def test_status_and_info_never_build(cache, monkeypatch):
    def must_not_build(folder, verbose):
        raise AssertionError("extension_status built the kernel")

    monkeypatch.setattr(cpu_loader, "_compile", must_not_build)
    assert cpu_loader.extension_status().startswith("not built")
    assert cpu_loader.planned_backend(8).startswith("cpu_ext once built")
    assert cpu_loader.planned_backend(cpu_loader.MAX_FUSED_DIM + 1) == "torch_chunked"
    monkeypatch.setenv("TOKBENCH_DISABLE_CPU_EXT", "1")
    assert cpu_loader.extension_status().startswith("disabled by TOKBENCH_DISABLE_CPU_EXT=1")
    assert not cache.exists()


def test_a_held_build_lock_is_waited_on_with_a_message_then_the_pytorch_path(cache, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cpu_loader, "_compile", fake_compiler(calls))
    monkeypatch.setenv("TOKBENCH_EXT_LOCK_TIMEOUT", "0.6")
    folder = jit.build_dir(cpu_loader.spec())
    z, c = torch.randn(40, 8), torch.randn(30, 8)
    with jit.build_lock(folder, "the test's build", timeout_s=0):  # another process's build, as far as flock sees
        start = time.monotonic()
        with pytest.warns(UserWarning, match=r"unavailable \(LockTimeout: another process \(pid \d+\) has been "
                                             r"building the fused CPU kernel for over 1 s"):
            idx, _ = nearest_codeword(z, c)
        waited = time.monotonic() - start
    assert 0.6 <= waited < 5
    assert torch.equal(idx, nearest_codeword_torch(z, c)[0])
    assert f"waiting for another process (pid {os.getpid()}) that is building the fused CPU kernel" in \
        capsys.readouterr().err
    assert calls == []
    assert cpu_loader.extension_status().startswith("failed: LockTimeout")
    # Released: the next process builds.
    monkeypatch.setattr(cpu_loader, "_state", {"module": None, "error": None, "tried": False})
    assert cpu_loader.load_extension() == "the module" and calls == [folder]


def test_a_bad_lock_timeout_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("TOKBENCH_EXT_LOCK_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="TOKBENCH_EXT_LOCK_TIMEOUT must be a number of seconds, got 'soon'"):
        jit.lock_timeout_s()


WAITER = textwrap.dedent("""
    import signal, sys
    from pathlib import Path
    from tokbench.cuda_ext import jit
    # What Lightning's signal connector does: note SIGTERM and carry on.
    signal.signal(signal.SIGTERM, lambda *a: print("noted", flush=True))
    signal.signal(signal.SIGINT, lambda *a: print("noted", flush=True))
    with jit.build_lock(Path(sys.argv[1]), "the test kernel", timeout_s=60):
        print("acquired", flush=True)
""")


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, -signal.SIGINT)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_a_process_waiting_on_the_lock(tmp_path, sig, code):
    with jit.build_lock(tmp_path, "the test's build", timeout_s=0):
        proc = subprocess.Popen([sys.executable, "-c", WAITER, str(tmp_path)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stderr.readline()  # the waiting message: the waiter is in its loop
            assert "waiting for another process" in line and "at most 60 s" in line
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=10)
        finally:
            proc.kill()
    assert proc.returncode == code, err
    assert "acquired" not in out and "noted" not in out
    # The waiter's own handlers are back once it stops waiting: here it stopped by the signal.
    assert ("stopped (SIGTERM)" in err) if sig == signal.SIGTERM else ("KeyboardInterrupt" in err)


def test_the_built_kernel_is_imported_by_a_new_process_without_building():
    if cpu_loader.load_extension() is None:
        pytest.fail(f"the CPU kernel did not build: {cpu_loader.extension_status()}")
    code = ("import time; t = time.monotonic(); from tokbench.cuda_ext import cpu_loader; "
            "m = cpu_loader.load_extension(); print(m.simd_level(), time.monotonic() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "building" not in out.stderr
    level, seconds = out.stdout.split()
    assert level in ("avx512", "avx2", "generic") and float(seconds) < 30
    assert Path(jit.build_dir(cpu_loader.spec()), jit.MARKER).is_file()


def test_the_cuda_extension_shares_the_cache_folder_lock_and_message(cache, monkeypatch, capsys):
    from tokbench.cuda_ext import loader

    assert jit.build_dir(loader.spec(["8.0"])) != jit.build_dir(loader.spec(["9.0"]))  # one folder per target
    calls = []

    def compile_(folder, archs, verbose):
        calls.append(archs)
        (folder / f"{loader.NAME}.so").write_bytes(b"")
        return "the CUDA module"

    monkeypatch.setattr(loader, "_compile", compile_)
    monkeypatch.setenv("TOKBENCH_EXT_LOCK_TIMEOUT", "0.3")
    with jit.build_lock(jit.build_dir(loader.spec(["9.0"])), "the test's build", timeout_s=0):
        with pytest.raises(jit.LockTimeout, match="building the CUDA nearest-codeword extension for over 0 s"):
            loader.build_extension(["9.0"])
    assert "waiting for another process" in capsys.readouterr().err
    assert loader.build_extension(["9.0"]) == "the CUDA module" and calls == [["9.0"]]
    assert "tokbench: building the CUDA nearest-codeword extension (once, ≈1-2 min)…" in capsys.readouterr().err


def test_info_reports_the_kernel_state_without_building(cache, monkeypatch, capsys):
    import argparse
    import json

    from tokbench.commands import info

    def must_not_build(folder, verbose):
        raise AssertionError("tokbench info built the kernel")

    monkeypatch.setattr(cpu_loader, "_compile", must_not_build)
    info.run(argparse.Namespace(checkpoint="vq:size=tiny", weights=None))
    search = json.loads(capsys.readouterr().out)["nearest_codeword"]
    assert search["cpu_ext"].startswith("not built: compiled on first use")
    assert search["cpu"] == "cpu_ext once built (torch_chunked if the build fails)"
    assert not cache.exists()


def test_a_damaged_library_is_reported_and_rebuilt_by_build_ext(cache, monkeypatch):
    folder = jit.build_dir(cpu_loader.spec())
    folder.mkdir(parents=True)
    (folder / f"{cpu_loader.NAME}.so").write_bytes(b"not an ELF file")
    (folder / jit.MARKER).write_text("{}")
    calls = []
    monkeypatch.setattr(cpu_loader, "_compile", fake_compiler(calls))
    with pytest.warns(UserWarning, match="CPU nearest-codeword kernel unavailable \\(ImportError"):
        assert cpu_loader.load_extension() is None
    assert calls == []
    assert cpu_loader.build_extension(force=True) == "the module" and calls == [folder]
