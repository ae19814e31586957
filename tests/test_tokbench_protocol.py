"""TokBench's text protocol, one rule per test, on hand-made cases with hand-computed values."""
from __future__ import annotations

import pytest

from tokbench.metrics import text as own
from tokbench.metrics.tokbench_text import WordResult, bucket_of, summarize, word_ratio, word_scores
from tokbench.tasks.base import MetricContext
from tokbench.tasks.text import WORDS_KEY, TextTask


def W(text: str, ratio: float, original: str | None = None, reconstruction: str | None = None) -> WordResult:
    """A word read correctly on the original (unless told otherwise) and as given on the reconstruction."""
    return WordResult(text, ratio, text if original is None else original, text if reconstruction is None else reconstruction)


def test_matching_is_raw_and_case_sensitive_unlike_the_own_protocol():
    assert word_scores("River", "River") == (1.0, 1.0)
    assert word_scores("River", "river") == (0.0, 1 - 1 / 5)  # one substitution of five characters
    assert own.word_scores("River", "river") == (1.0, 1.0)  # tokbench's own: case folded first
    # no Unicode normalization: precomposed e-acute vs e + combining accent = 1 substitution + 1 insertion
    assert word_scores("caf\u00e9", "cafe\u0301") == (0.0, 1 - 2 / 5)
    assert own.word_scores("caf\u00e9", "cafe\u0301")[0] == 1.0  # NFKC composes them
    assert word_scores("ab", "ab ") == (0.0, 1 - 1 / 3)  # no whitespace stripping
    assert word_scores("dog", "dogs!") == (0.0, 1 - 2 / 5)  # denominator: the longer string
    assert word_scores("garden", "") == (0.0, 0.0)
    with pytest.raises(ValueError, match="empty"):
        word_scores("", "x")


def test_size_ratio_is_mean_character_width_over_the_longer_image_side():
    assert word_ratio([10, 0, 70, 12], "hello", (200, 300)) == pytest.approx(60 / 5 / 300)
    assert word_ratio([10, 0, 70, 40], "hello", (300, 200)) == pytest.approx(60 / 5 / 300)  # height plays no part
    with pytest.raises(ValueError, match="empty"):
        word_ratio([0, 0, 5, 5], "", (10, 10))


@pytest.mark.parametrize("setting, cases", [
    (256, [(0.0199, None), (0.02, "small"), (0.0299, "small"), (0.03, "medium"), (0.0399, "medium"), (0.04, "large"),
           (0.999, "large"), (1.0, None)]),
    (512, [(0.0099, None), (0.01, "small"), (0.0199, "small"), (0.02, "medium"), (0.0299, "medium"), (0.03, "large"),
           (1.0, None)]),
    (1024, [(0.0049, None), (0.005, "small"), (0.0099, "small"), (0.01, "medium"), (0.0199, "medium"), (0.02, "large"),
            (1.0, None)]),
])
def test_buckets_per_resolution_setting(setting, cases):
    for ratio, bucket in cases:
        assert bucket_of(ratio, setting) == bucket, (setting, ratio)


def test_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="256, 512, 1024"):
        bucket_of(0.05, 384)


def test_words_outside_every_bucket_are_dropped():
    words = [W("tiny", 0.019, reconstruction="x"), W("huge", 1.2, reconstruction="x"), W("fine", 0.025)]
    result = summarize(words, 256)
    assert result.counts["dropped_size"] == 2 and result.counts["small"] == 1
    assert result.metrics["tacc_small"] == 1.0  # the two misread words are not counted anywhere
    # the same 0.019 word is in the small bucket at 512
    assert summarize(words, 512).counts["small"] == 1


def test_words_are_pooled_over_the_dataset_not_averaged_per_image():
    # image A: one small word, read right; image B: three small words, all wrong.
    rows = [{WORDS_KEY: [["Stone", 0.025, "Stone", "Stone"]]},
            {WORDS_KEY: [[t, 0.025, t, "?"] for t in ("north", "River", "TEA")]}]
    summary = TextTask().aggregate(rows, MetricContext(resolution="256", task_options={"text": {"text_protocol": "tokbench"}}))
    assert summary.metrics["tacc_small"]["mean"] == pytest.approx(1 / 4)  # per image first would give 1/2
    assert summary.metrics["tacc_small"]["n"] == 4
    assert summary.extra["protocol"]["text_protocol"] == "tokbench"


def test_headline_is_the_mean_of_the_three_bucket_means():
    words = ([W("a1", 0.025)] + [W(f"s{i}", 0.025, reconstruction="x") for i in range(3)]  # small: 1/4
             + [W("m1", 0.035)]  # medium: 1/1
             + [W("l1", 0.05), W("l2", 0.05, reconstruction="x")])  # large: 1/2
    result = summarize(words, 256)
    assert (result.metrics["tacc_small"], result.metrics["tacc_medium"], result.metrics["tacc_large"]) == (0.25, 1.0, 0.5)
    assert result.metrics["tacc_mean"] == pytest.approx((0.25 + 1.0 + 0.5) / 3)  # not 3/7 over all words
    # NED: misread "s0" -> "x" is 1 - 2/2 = 0; bucket small = (1 + 0 + 0 + 0) / 4
    assert result.metrics["tned_small"] == pytest.approx(0.25)
    assert result.metrics["tned_mean"] == pytest.approx((0.25 + 1.0 + 0.5) / 3)


def test_refine_drops_words_misread_on_the_original():
    words = [W("Stone", 0.025),
             W("North", 0.025, original="north", reconstruction="Nort"),  # misread (case) on the original
             W("coffee", 0.025, original="coffee", reconstruction="cofee")]
    refined = summarize(words, 256)
    assert refined.counts["dropped_refine"] == 1 and refined.counts["small"] == 2
    assert refined.metrics["tacc_small"] == pytest.approx(1 / 2)
    assert refined.metrics["tned_small"] == pytest.approx((1 + (1 - 1 / 6)) / 2)
    kept = summarize(words, 256, refine=False)
    assert kept.metrics["tacc_small"] == pytest.approx(1 / 3)
    assert kept.metrics["tned_small"] == pytest.approx((1 + (1 - 1 / 5) + (1 - 1 / 6)) / 3)
    # the identity bound with refine is 1 by construction; without it, the recognizer's own error shows
    assert summarize(words, 256, reading="original").metrics["tacc_small"] == 1.0
    assert summarize(words, 256, refine=False, reading="original").metrics["tacc_small"] == pytest.approx(2 / 3)


def test_an_empty_bucket_leaves_its_metrics_and_the_headline_out_with_a_reason():
    result = summarize([W("a", 0.025), W("b", 0.05)], 256)
    assert "tacc_medium" not in result.metrics and "tacc_mean" not in result.metrics
    assert "no medium words" in result.missing["tacc_medium"] and "NaN" in result.missing["tned_mean"]


def test_own_protocol_reports_no_tokbench_metrics_and_says_why():
    summary = TextTask().aggregate([{"cer_gt": 0.0}], MetricContext())
    assert summary.extra["protocol"]["text_protocol"] == "own"
    assert summary.extra["protocol"]["ocr"].startswith("tesseract")
    assert not any(m.startswith("tacc_") for m in summary.metrics)
    assert "--text-protocol tokbench" in summary.skipped_metrics["tacc_mean"]


@pytest.mark.parametrize("resolution", ["native", "300", "letterbox:384"])
def test_tokbench_protocol_refuses_resolutions_without_thresholds(resolution):
    from types import SimpleNamespace

    cfg = SimpleNamespace(task_options={"text": {"text_protocol": "tokbench"}}, resolution=resolution)
    with pytest.raises(ValueError, match="256, 512 or 1024"):
        TextTask().check_applicable(None, cfg)
    TextTask().check_applicable(None, SimpleNamespace(task_options={"text": {"text_protocol": "tokbench"}},
                                                      resolution="letterbox:512"))


def test_unknown_protocol_or_recognizer_is_refused():
    from types import SimpleNamespace

    with pytest.raises(ValueError, match="--text-protocol must be one of own, tokbench"):
        TextTask().check_applicable(None, SimpleNamespace(task_options={"text": {"text_protocol": "paper"}},
                                                          resolution="256"))
    with pytest.raises(ValueError, match="--ocr must be one of tesseract, easyocr, parseq"):
        TextTask().check_applicable(None, SimpleNamespace(task_options={"text": {"ocr": "trocr"}}, resolution="256"))


def test_leaderboard_tells_results_of_other_protocols_apart():
    from tokbench.leaderboard.validation import duplicate_key

    def results(protocol=None):
        block = {"metrics": {}, "extra": {} if protocol is None else {"protocol": protocol}}
        return {"tokenizer": {"checkpoint_sha256": None, "name": "jpeg:q=50", "config": {"quality": 50}},
                "datasets": [{"name": "text-sizes", "fingerprint": "f" * 64, "resolution": "256"}],
                "tokbench": {"version": "0.1.0"}, "tasks": {"text": block}}

    own = results({"text_protocol": "own", "ocr": "tesseract 5.3.0"})
    assert duplicate_key(own) == duplicate_key(results({"text_protocol": "own", "ocr": "tesseract 5.3.0"}))
    assert duplicate_key(own) != duplicate_key(results({"text_protocol": "tokbench", "ocr": "tesseract 5.3.0"}))
    assert duplicate_key(own) != duplicate_key(results({"text_protocol": "own", "ocr": "easyocr 1.7.2"}))
    assert duplicate_key(results()) != duplicate_key(own)  # results without a protocol keep their old key


def test_eval_command_line_carries_the_text_options():
    import argparse

    from tokbench.tasks.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["eval", "--tokenizer", "identity", "--text-protocol", "tokbench", "--ocr", "easyocr"])
    assert TextTask.options_from_args(args) == {"text_protocol": "tokbench", "ocr": "easyocr"}
    assert TextTask.options_from_args(parser.parse_args(["eval", "--tokenizer", "identity"])) == {}
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "--tokenizer", "identity", "--ocr", "trocr"])


def test_a_folder_with_word_boxes_is_scored_by_tokbench_rules(tmp_path, monkeypatch):
    """TokBench-style data: images plus ground-truth word boxes in manifest.jsonl (Tesseract here)."""
    import json

    from PIL import Image

    from tokbench.tasks.runner import EvalConfig, run_eval
    from tokbench.tasks.suites import load_suite

    monkeypatch.setenv("TOKBENCH_CACHE", str(tmp_path / "cache"))
    page = load_suite("text-sizes").items[0]
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(page.image).save(data / "page.png")
    words = [{"text": w["text"], "box": w["box"]} for w in page.meta["words"]]
    (data / "manifest.jsonl").write_text(json.dumps({"file": "page.png", "words": words}) + "\n")
    results = run_eval(EvalConfig(tokenizer="identity", tasks=["text"], data=data, out=tmp_path / "out",
                                  resolution="letterbox:512", skip_metrics=["lpips"], workers=0,
                                  task_options={"text": {"text_protocol": "tokbench"}}))
    block = results["tasks"]["text"]
    counts = block["extra"]["tokbench"]["word_counts"]
    assert counts["words"] == len(words) and counts["dropped_size"] == 0  # at 512 every line is in a bucket
    assert sum(counts[b] for b in ("small", "medium", "large")) + counts["dropped_refine"] == len(words)
    assert block["metrics"]["tacc_mean"]["mean"] == 1.0  # identity, after refine
    (data / "manifest.jsonl").write_text(json.dumps({"file": "page.png", "words": [{"text": "x", "box": [5, 5, 2, 9]}]}))
    with pytest.raises(ValueError, match=r"word 1 \('x'\) needs 'box'"):
        run_eval(EvalConfig(tokenizer="identity", tasks=["text"], data=data, out=tmp_path / "out2", workers=0,
                            skip_metrics=["lpips"], task_options={"text": {"text_protocol": "tokbench"}}))
