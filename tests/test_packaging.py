"""The repo's top-level folders install only inside the tokbench namespace."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, cwd: Path) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_tokenizers_from_repo_root_gets_the_real_package():
    pytest.importorskip("tokenizers", reason="the unrelated Hugging Face 'tokenizers' package is a test extra")
    where = run_python("import tokenizers; print(tokenizers.__file__); print(hasattr(tokenizers, 'Tokenizer'))", REPO)
    path, has_class = where.splitlines()
    assert not Path(path).resolve().is_relative_to(REPO / "tokenizers"), path
    assert has_class == "True"


def test_import_tasks_from_repo_root_is_not_our_folder():
    out = subprocess.run([sys.executable, "-c", "import tasks"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode != 0 and "No module named 'tasks'" in out.stderr


def test_namespace_packages_import_from_anywhere(tmp_path):
    files = run_python("import tokbench.tokenizers as t, tokbench.tasks as k; print(t.__name__, k.__name__)", tmp_path)
    assert files == "tokbench.tokenizers tokbench.tasks"


def test_wheel_installs_nothing_at_top_level_but_tokbench(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("tokbench-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"tokbench"}
    assert "tokbench/tokenizers/codec_baselines.py" in names
