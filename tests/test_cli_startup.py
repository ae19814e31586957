"""The light commands start without importing torch, Lightning or pandas (issue #22 item 2)."""
import json
import subprocess
import sys

import pytest

PROBE = """
import sys
from tokbench.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print('HEAVY=' + ','.join(m for m in ('torch', 'lightning', 'pandas') if m in sys.modules), file=sys.stderr)
"""


def heavy_modules(*argv: str, env=None) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=list(argv))], capture_output=True, text=True,
                         timeout=300, env=env)
    line = [l for l in out.stderr.splitlines() if l.startswith("HEAVY=")][-1]
    return [m for m in line[len("HEAVY="):].split(",") if m]


@pytest.mark.parametrize("argv", [["--help"], ["gen", "--help"], ["leaderboard", "--help"], ["submit", "--help"],
                                  ["validate", "--help"], ["weights", "--help"]])
def test_help_imports_no_torch(argv):
    assert heavy_modules(*argv) == []


def test_validate_imports_no_torch(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"schema_version": 1}))
    assert heavy_modules("validate", str(path)) == []


def test_list_is_cached_and_the_cached_run_imports_no_torch(tmp_path):
    import os

    env = {**os.environ, "TOKBENCH_CACHE": str(tmp_path)}
    first = subprocess.run([sys.executable, "-m", "tokbench", "list"], capture_output=True, text=True, env=env,
                           timeout=300)
    assert first.returncode == 0, first.stderr
    assert len(list((tmp_path / "list").glob("*.json"))) == 1
    second = subprocess.run([sys.executable, "-m", "tokbench", "list"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert second.stdout == first.stdout
    assert heavy_modules("list", env=env) == []


def test_list_cache_key_follows_source_changes(tmp_path, monkeypatch):
    from tokbench.commands import list_tokenizers

    key = list_tokenizers.cache_key()
    assert list_tokenizers.cache_key() == key
    # A changed source file (size or mtime) changes the key, so stale rows are never shown.
    real = list_tokenizers.source_signature
    monkeypatch.setattr(list_tokenizers, "source_signature",
                        lambda modules: [(p, size + 1, t) if i == 0 else (p, size, t)
                                         for i, (p, size, t) in enumerate(real(modules))])
    assert list_tokenizers.cache_key() != key


def test_eval_help_still_lists_task_options():
    out = subprocess.run([sys.executable, "-m", "tokbench", "eval", "--help"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "--gen-" in out.stdout
