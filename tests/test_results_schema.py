"""The results-file schema and its extra checks (ranges, finiteness, time stamps, atomic writes).

``make_results`` builds schema-valid results files; the leaderboard tests use it too.
"""
from __future__ import annotations

import copy
import json
import secrets

import pytest

from tokbench.results import RESULTS_SCHEMA_VERSION, load_schema, read_results, validate_results, write_results

FINGERPRINTS = {"photos": "a" * 64, "text": "b" * 64}


def _metric(mean: float, half: float, n: int, higher: bool) -> dict:
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n, "higher_is_better": higher}


def make_results(name: str = "jpeg:q=50", family: str = "jpeg", psnr: float = 30.0, cer: float = 0.1,
                 bits: float | None = 40000.0, tokens: int | None = None, checkpoint: str | None = "random",
                 fingerprints: dict[str, str] | None = None, version: str = "0.1.0") -> dict:
    """A schema-valid results object with a reconstruction and a text task.

    ``checkpoint="random"`` gives a fresh SHA-256, so two calls never collide as duplicates.
    """
    fingerprints = fingerprints or FINGERPRINTS
    sha = secrets.token_hex(32) if checkpoint == "random" else checkpoint
    return {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "tokbench": {"version": version, "git_commit": None},
        "created": "2025-01-02T03:04:05+00:00",
        "tokenizer": {"name": name, "family": family, "kind": "discrete", "config": {"q": 50},
                      "checkpoint_sha256": sha, "parameters": 1234, "tokens_per_image": tokens, "bits_per_image": bits},
        "datasets": [
            {"name": "photos", "source": "builtin", "version": "1", "fingerprint": fingerprints["photos"],
             "num_images": 8, "resolution": "256"},
            {"name": "text", "source": "builtin", "version": "1", "fingerprint": fingerprints["text"],
             "num_images": 8, "resolution": "native"},
        ],
        "tasks": {
            "reconstruction": {"dataset": "photos", "num_images": 8, "num_skipped": 0, "skipped": [],
                               "metrics": {"psnr": _metric(psnr, 1.0, 8, True), "ssim": _metric(0.8, 0.05, 8, True)},
                               "skipped_metrics": {"lpips": "skipped with --skip-metric"}, "extra": {}},
            "text": {"dataset": "text", "num_images": 8, "num_skipped": 1, "skipped": [{"file": "x.png", "reason": "unreadable"}],
                     "metrics": {"cer_gt": _metric(cer, cer / 2, 7, False), "word_acc_all": _metric(0.7, 0.1, 7, True)},
                     "skipped_metrics": {}, "extra": {"per_size": [[8, 0.5], [16, 0.9]]}},
        },
        "hardware": {"device": "cpu", "gpu": None, "cpu_count": 2, "torch": "2.4.0", "platform": "Linux"},
        "timings": {"total_s": 12.5, "tasks_s": {"reconstruction": 5.0, "text": 7.5}},
    }


def test_schema_is_valid_draft_2020_12():
    import jsonschema

    schema = load_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"] == {"const": RESULTS_SCHEMA_VERSION}


def test_valid_file_has_no_errors():
    assert validate_results(make_results()) == []
    unknown_metric = make_results()
    unknown_metric["tasks"]["reconstruction"]["metrics"]["my_metric"] = _metric(-5.0, 1.0, 8, True)
    assert validate_results(unknown_metric) == [
        "$.tasks.reconstruction.metrics.my_metric: unknown metric 'my_metric' (not in the metric registry; "
        "install the plug-in that declares it)"]


@pytest.mark.parametrize("mutate, path, reason", [
    (lambda r: r.update(schema_version=2), "$.schema_version", "1 was expected"),
    (lambda r: r.pop("tokenizer"), "$", "'tokenizer' is a required property"),
    (lambda r: r["tokenizer"].update(kind="analog"), "$.tokenizer.kind", "is not one of"),
    (lambda r: r["tokenizer"].update(checkpoint_sha256="xyz"), "$.tokenizer.checkpoint_sha256", "does not match"),
    (lambda r: r["tokenizer"].update(parameters=-1), "$.tokenizer.parameters", "less than the minimum"),
    (lambda r: r["datasets"][1].update(fingerprint="ABC"), "$.datasets[1].fingerprint", "does not match"),
    (lambda r: r["datasets"][0].update(resolution="huge"), "$.datasets[0].resolution", "does not match"),
    (lambda r: r["tasks"]["text"]["metrics"]["cer_gt"].update(ci95=[0.1]), "$.tasks.text.metrics.cer_gt.ci95", "too short"),
    (lambda r: r["tasks"]["reconstruction"]["metrics"]["psnr"].update(mean=130.0, ci95=[129.0, 131.0]),
     "$.tasks.reconstruction.metrics.psnr", "psnr must lie in [0.0, 100.0]"),
    (lambda r: r["tasks"]["reconstruction"]["metrics"]["ssim"].update(mean=0.8, ci95=[0.7, 1.2]),
     "$.tasks.reconstruction.metrics.ssim", "ssim must lie in [-1.0, 1.0]"),
    (lambda r: r["tasks"]["text"]["metrics"]["word_acc_all"].update(mean=0.5, ci95=[0.6, 0.7]),
     "$.tasks.text.metrics.word_acc_all", "outside its interval"),
    (lambda r: r["tasks"]["text"]["metrics"]["cer_gt"].update(mean=-0.1, ci95=[-0.2, 0.0]),
     "$.tasks.text.metrics.cer_gt", "cer_gt must lie in [0.0, inf]"),
    (lambda r: r["tasks"]["text"]["metrics"]["cer_gt"].update(mean=float("nan")),
     "$.tasks.text.metrics.cer_gt.mean", "finite number"),
    (lambda r: r["tokenizer"].update(bits_per_image=float("inf")), "$.tokenizer.bits_per_image", "finite number"),
    (lambda r: r.update(created="yesterday"), "$.created", "not an ISO 8601 date-time"),
    (lambda r: r.update(created="2025-01-02T03:04:05"), "$.created", "no time zone"),
])
def test_each_error_names_field_and_reason(mutate, path, reason):
    results = make_results()
    mutate(results)
    errors = validate_results(results)
    assert any(e.startswith(f"{path}: ") and reason in e for e in errors), errors


def test_not_an_object():
    assert validate_results([1, 2]) == ["$: [1, 2] is not of type 'object'"]


def test_write_then_read_round_trip(tmp_path):
    results = make_results()
    path = tmp_path / "results.json"
    write_results(path, results)
    assert read_results(path) == results
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file left behind


def test_write_refuses_invalid_and_leaves_old_file(tmp_path):
    path = tmp_path / "results.json"
    write_results(path, make_results(name="first"))
    bad = copy.deepcopy(make_results())
    bad["tasks"]["reconstruction"]["metrics"]["psnr"]["mean"] = -3.0
    with pytest.raises(ValueError, match=r"\$\.tasks\.reconstruction\.metrics\.psnr"):
        write_results(path, bad)
    assert json.loads(path.read_text())["tokenizer"]["name"] == "first"


def test_read_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: cannot read"):
        read_results(path)
