"""`tokbench eval --text-protocol tokbench --ocr easyocr` on the `text-sizes` suite, end to end.

EasyOCR on a CPU costs ~0.1 s per word crop here, so these runs score two of the suite's
eight images (``limit=2``, ~50 words, every bucket filled) and share one OCR cache, so that
the originals are read once.
"""
from __future__ import annotations

import json

import pytest

pytest.importorskip("easyocr_en_models", reason="EasyOCR's offline weights are a test extra")

from tokbench.results import validate_results  # noqa: E402
from tokbench.tasks.runner import EvalConfig, run_eval  # noqa: E402

LIMIT = 2


@pytest.fixture(scope="module")
def evaluate(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokbench_protocol")
    mp = pytest.MonkeyPatch()
    mp.setenv("TOKBENCH_CACHE", str(root / "cache"))

    def run(tokenizer: str, resolution: str = "256") -> dict:
        out = root / f"{tokenizer.replace(':', '_')}_{resolution}"
        return run_eval(EvalConfig(tokenizer=tokenizer, tasks=["text"], suite="text-sizes", out=out, resolution=resolution,
                                   task_options={"text": {"text_protocol": "tokbench", "ocr": "easyocr"}}, limit=LIMIT,
                                   skip_metrics=["lpips"],
                                   workers=0))

    yield run
    mp.undo()


def tacc(results: dict, bucket: str) -> float:
    return results["tasks"]["text"]["metrics"][f"tacc_{bucket}"]["mean"]


def test_identity_reads_the_large_words_and_names_the_protocol(evaluate, tmp_path_factory):
    results = evaluate("identity")
    block = results["tasks"]["text"]
    protocol = block["extra"]["protocol"]
    assert protocol["text_protocol"] == "tokbench"
    assert protocol["ocr"].startswith("easyocr ") and "5864788e1821be9e454ec108d61b887d" in protocol["ocr"]
    tb = block["extra"]["tokbench"]
    assert tb["setting"] == 256 and min(tb["word_counts"][b] for b in ("small", "medium", "large")) >= 8
    assert tb["word_counts"]["dropped_size"] > 0  # the 12-17 px lines are under TokBench's smallest bucket at 256
    assert tb["identity_unrefined"]["tacc_large"] >= 0.9  # EasyOCR reads the large words of the originals
    # refine keeps only words read right on the original: on the identity every metric is 1
    assert {m: v["mean"] for m, v in block["metrics"].items() if m.startswith(("tacc", "tned"))} == {
        f"{k}_{b}": 1.0 for k in ("tacc", "tned") for b in ("small", "medium", "large", "mean")}
    assert "cer_gt" in block["skipped_metrics"] and "word_acc_all" in block["skipped_metrics"]
    assert validate_results(results) == []
    out = next(p for p in tmp_path_factory.getbasetemp().glob("tokbench_protocol*/identity_256"))
    pinned = json.loads((out / "cache" / "run.json").read_text())
    assert pinned["text"] == {"text_protocol": "tokbench", "ocr": "easyocr"}
    assert "_tokbench_words" not in (out / "per_image.csv").read_text().splitlines()[0]


def test_downsampling_loses_small_words_before_large_ones(evaluate):
    half = evaluate("resize:f=2")  # at 256: small words ~3 px per character after the round trip
    assert tacc(half, "small") < tacc(half, "large")
    quarter = evaluate("resize:f=4", resolution="512")  # at 256 nothing survives f=4; at 512 large words do
    assert tacc(quarter, "small") < tacc(quarter, "large")


def test_jpeg_quality_orders_the_tokbench_scores(evaluate):
    scores = [evaluate(f"jpeg:q={q}")["tasks"]["text"]["metrics"]["tned_mean"]["mean"] for q in (50, 20, 8)]
    assert scores[0] >= scores[1] >= scores[2] and scores[0] > scores[2], scores
