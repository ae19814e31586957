"""A task and a metric from a plug-in package that tokbench knows nothing about.

The plug-in is a module plus a ``.dist-info`` with an entry point in ``tokbench.tasks``,
written into a temporary folder (as ``pip install`` would), so tokbench finds it only
through ``importlib.metadata``. It runs through ``tokbench eval``, results validation and
the leaderboard table without touching any tokbench file.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = '''
from tokbench.metrics.declaration import Metric
from tokbench.tasks.base import Task, image_quality_rows


def gradient_energy(x_3HW):
    return float((x_3HW[:, :, 1:] - x_3HW[:, :, :-1]).abs().mean() + (x_3HW[:, 1:] - x_3HW[:, :-1]).abs().mean())


class SharpnessTask(Task):
    name, default_suite, primary = "sharpness", "detail", "gradient_ratio"
    metrics = (Metric("gradient_ratio", "gradient energy ratio", "mean absolute gradient of the reconstruction "
                      "over the original's", True, low=0.0, high=10.0), "psnr")

    def score(self, pairs, ctx):
        rows = image_quality_rows(pairs, ctx)
        for row, pair in zip(rows, pairs):
            row["gradient_ratio"] = gradient_energy(pair.reconstruction) / max(gradient_energy(pair.original), 1e-8)
        return rows
'''


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("site")
    (root / "tbplug_sharpness.py").write_text(PLUGIN)
    info = root / "tbplug_sharpness-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tbplug-sharpness\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tokbench.tasks]\nsharpness = tbplug_sharpness:SharpnessTask\n")
    return root


def _tokbench(args: list[str], plugin: Path | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if plugin is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(plugin), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "tokbench", *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def plugin_run(plugin_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    done = _tokbench(["eval", "--tokenizer", "resize:f=4", "--tasks", "sharpness,reconstruction", "--skip-metric",
                      "lpips,rfid", "--limit", "5", "--workers", "0", "--out", str(out)], plugin_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_plugin_task_and_metric_run_through_eval(plugin_run):
    results = json.loads((plugin_run / "results.json").read_text())
    block = results["tasks"]["sharpness"]
    assert block["dataset"] == "detail" and block["num_images"] == 5
    ratio = block["metrics"]["gradient_ratio"]
    assert ratio["higher_is_better"] is True and 0 < ratio["mean"] < 1  # 4x down- and up-sampling smooths fine detail
    assert set(block["metrics"]) == {"gradient_ratio", "psnr"}
    report = (plugin_run / "report.md").read_text()
    assert "gradient energy ratio" in report and "sharpness: worst, median and best image by gradient energy ratio" in report
    assert (plugin_run / "grids" / "sharpness.png").is_file()


def test_results_with_plugin_metrics_validate_only_where_the_plugin_is_installed(plugin_run, plugin_dir):
    path = str(plugin_run / "results.json")
    assert _tokbench(["validate", path], plugin_dir).returncode == 0
    without = _tokbench(["validate", path], None)
    # the plug-in's task is unknown there, as its metrics are (a task is refused before its metrics are read)
    assert without.returncode == 1 and "$.tasks.sharpness: unknown task 'sharpness'" in without.stdout


def test_plugin_metrics_reach_the_leaderboard_with_their_declared_direction(plugin_run, plugin_dir, tmp_path, monkeypatch):
    from tokbench.leaderboard.store import Store
    from tokbench.leaderboard.table import format_table
    from tokbench.leaderboard.validation import check_submission, default_accepted_versions

    monkeypatch.syspath_prepend(str(plugin_dir))
    store = Store(f"sqlite:///{tmp_path / 'lb.db'}")
    try:
        token_id = store.authenticate(store.create_token("plug"))[0]
        body = (plugin_run / "results.json").read_bytes()
        entry_id = store.add(check_submission(body, default_accepted_versions(), {}), token_id)
        entry = store.get(entry_id)
        assert entry.metrics["sharpness"]["gradient_ratio"]["higher_is_better"] is True
        table = format_table([entry], "markdown", task="sharpness")
        assert "sharpness.gradient_ratio" in table and "sharpness.psnr" in table
    finally:
        store.close()
