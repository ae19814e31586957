"""Reports read like a paper's table: run header, registry-driven number formats, arrows (issue #22 item 5)."""
import re

from tokbench.metrics.formatting import POOLED, direction_arrow, format_entry, format_value
from tokbench.tasks.report import header_fields, summary_table, summary_text, task_table, write_report


def run_dict(name="vq:size=tiny", sha="ab" * 32):
    return {
        "schema_version": 1, "tokbench": {"version": "0.1.0", "git_commit": "0123456789abcdef"},
        "created": "2026-12-04T20:00:00+00:00",
        "protocol": {"name": "llamagen-rfid"},
        "tokenizer": {"name": name, "family": "vq", "kind": "discrete", "config": {}, "checkpoint_sha256": sha,
                      "parameters": 1234567, "tokens_per_image": 256, "bits_per_image": 86688.3,
                      "rate_resolution": "256"},
        "datasets": [{"name": "text", "source": "builtin", "version": "1", "fingerprint": "f00dfeed" * 8,
                      "num_images": 17, "resolution": "256"}],
        "hardware": {"device": "cuda", "gpu": "NVIDIA H200"},
        "tasks": {"text": {
            "dataset": "text", "num_images": 17, "num_skipped": 0, "skipped": [],
            "metrics": {"psnr": {"mean": 31.84123, "ci95": [29.1, 34.2], "n": 17, "higher_is_better": True},
                        "lpips": {"mean": 0.003843, "ci95": [4.45e-06, 0.00768], "n": 17, "higher_is_better": False},
                        "tacc_mean": {"mean": 0.8689, "ci95": [0.8689, 0.8689], "n": 17, "higher_is_better": True}},
            "skipped_metrics": {"rfid": "weights not found: x.pth; run 'tokbench weights fetch --metrics rfid'"},
            "extra": {"protocol": {"text_protocol": "tokbench", "ocr": "tesseract 5.3"}}}},
    }


def test_numbers_follow_the_metric_declaration():
    assert format_value("psnr", 31.84123) == "31.84"  # dB: two decimals
    assert format_value("ssim", 0.874615) == "0.8746"  # a fraction: four decimals
    assert format_value("lpips", 0.003843) == "0.0038"
    assert format_value("nll_bits_per_image", 86688.3) == "86,688"  # bits: thousands separators
    assert format_value("tacc_mean", 0.8689) == "86.89%"  # TokBench publishes percentages
    assert format_value("psnr", None) == "—"
    assert format_value("cer_gt", 4.45e-06) == "0.0000"  # an error rate: never scientific notation
    assert format_value("rfid", 12.3456) == "12.35" and format_value("rfid", 12345.6) == "12,346"


def test_pooled_metrics_say_so_instead_of_a_zero_width_interval():
    entry = {"mean": 0.8689, "ci95": [0.8689, 0.8689], "n": 17}
    assert format_entry("tacc_mean", entry) == f"86.89% ({POOLED})"
    assert format_entry("psnr", {"mean": 30.0, "ci95": [27.8, 32.2], "n": 9}) == "30.00 [27.80, 32.20]"


def test_arrows_come_from_the_registry():
    assert direction_arrow("psnr") == "↑" and direction_arrow("lpips") == "↓"
    assert direction_arrow("not_a_metric", False) == "↓"


def test_header_names_what_was_measured_and_how():
    fields = header_fields(run_dict())
    assert fields["checkpoint SHA-256"].startswith("abababababababab")
    assert "text (builtin, 17 images, fingerprint f00dfeedf00d)" == fields["suites"]
    assert "shorter side resized to 256" in fields["resolution"]
    assert fields["protocol"] == "llamagen-rfid" and "tesseract 5.3" in fields["recognizer"]
    assert fields["tokbench"] == "0.1.0 (commit 0123456789)"
    assert fields["device"] == "cuda (NVIDIA H200)" and fields["date"].startswith("2026-12-04")


def test_every_metric_row_has_an_arrow_and_skipped_metrics_are_named():
    table, notes = summary_table([run_dict(), run_dict(name="jpeg:q=50", sha=None)])
    metric_rows = [r for r in table.rows if r[0].startswith("text:")]
    assert metric_rows and all(r[0].endswith(("↑", "↓")) for r in metric_rows)
    assert ["bits / image @ 256", "86,688", "86,688"] == table.rows[0]
    rfid = next(r for r in metric_rows if "rFID" in r[0])
    assert rfid[1:] == ["not computed", "not computed"]
    assert len(notes) == 1 and "tokbench weights fetch --metrics rfid" in notes[0]  # one note per reason
    assert "text: rFID (vq:size=tiny)" in notes[0] and "text: rFID (jpeg:q=50)" in notes[0]
    assert [r[1] for r in task_table(run_dict()["tasks"]["text"]).rows] == ["↑", "↓", "↑"]  # psnr, lpips, tacc
    text = summary_text([run_dict()])
    assert "0.003843" not in text and "e-06" not in text and "0.0038 [0.0000, 0.0077]" in text


def test_report_files_have_the_header_and_a_styled_table(tmp_path):
    write_report(tmp_path, [run_dict()])
    md = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    for text in (md, page):
        assert "0123456789" in text and "f00dfeedf00d" in text and "llamagen-rfid" in text
        assert "pooled, no interval" in text and "86.89%" in text
    assert not re.search(r"^\|\s*metric\s*\|\s*\|", md, re.M)  # no empty index row of a data-frame dump
    assert '<table class="header">' in page and "<style>" in page and 'class="num"' in page
    assert 'class="dataframe"' not in page


def test_one_image_is_not_called_pooled_and_inapplicable_metrics_stay_out_of_the_table():
    assert format_entry("psnr", {"mean": 30.0, "ci95": [30.0, 30.0], "n": 1}) == "30.00 (one image, no interval)"
    run = run_dict()
    run["tasks"]["text"]["skipped_metrics"].update({"tacc_small": "TokBench protocol only", "tacc_large":
                                                    "TokBench protocol only"})
    table, notes = summary_table([run])
    assert not any("T-ACC, small" in r[0] for r in table.rows)  # no weights would compute it: a note only
    assert any(n.endswith("TokBench protocol only") and "T-ACC, small text" in n and "T-ACC, large text" in n
               for n in notes)
