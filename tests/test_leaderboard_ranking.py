"""Ranking only within one test set (suite, protocol, resolution), and how entries are shown:
names without local paths, badges by what was checked, grouped reasons, labelled log-bits plots."""
from __future__ import annotations

import json
import re

import pytest
from test_results_schema import FINGERPRINTS, make_results

from tokbench.cli import main
from tokbench.comparability import Setting, comparability_warnings, protocol_name, task_settings
from tokbench.leaderboard.display import checks, display_name, grouped_reasons, plural
from tokbench.leaderboard.plot import Point, build_plot
from tokbench.leaderboard.query import EntryQuery
from tokbench.leaderboard.ranking import boards, rank
from tokbench.leaderboard.render import count, render_entry, render_index
from tokbench.leaderboard.store import Entry, Store
from tokbench.leaderboard.table import entries_frame
from tokbench.leaderboard.validation import KnownSuite, check_submission, default_accepted_versions

SIZES_FP = "d" * 64
KNOWN = {"photos": KnownSuite(FINGERPRINTS["photos"]), "text": KnownSuite(FINGERPRINTS["text"]),
         "text-sizes": KnownSuite(SIZES_FP)}


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'lb.db'}")
    s.create_token("alice")
    yield s
    s.close()


def preset(name: str) -> dict:
    """A results file's ``protocol`` block as ``tokbench eval --protocol NAME`` records it."""
    return {"name": name, "resolution": "256", "preprocessing": "resize-crop", "deviations": []}


def on(results: dict, suite: str | None = None, resolution: str | None = None, protocol: object = "absent") -> dict:
    """``results`` with its text task moved to another suite / resolution and a protocol field
    (a name: that preset's block)."""
    text = results["datasets"][1]
    if suite:
        text.update(name=suite, fingerprint=SIZES_FP if suite == "text-sizes" else text["fingerprint"])
        results["tasks"]["text"]["dataset"] = suite
    if resolution:
        text["resolution"] = resolution
    if protocol != "absent":
        results["protocol"] = preset(protocol) if isinstance(protocol, str) else protocol
    return results


def add(store: Store, results: dict) -> int:
    candidate = check_submission(json.dumps(results).encode(), default_accepted_versions(), KNOWN)
    return store.add(candidate, 1)


def test_entries_of_different_suites_protocols_or_resolutions_never_share_a_ranked_column(store):
    # The case: jpeg:q=50 on `text` (CER 0.30) and jpeg:q=20 on `text-sizes` (CER 0.05,
    # easier images) used to be ranked in one column, q=20 first.
    ids = {"q50 text": add(store, make_results("jpeg:q=50", cer=0.30)),
           "q80 text": add(store, make_results("jpeg:q=80", cer=0.10)),
           "q20 sizes": add(store, on(make_results("jpeg:q=20", cer=0.05), suite="text-sizes")),
           "q90 text 256": add(store, on(make_results("jpeg:q=90", cer=0.01), resolution="256")),
           "q95 text tokbench": add(store, on(make_results("jpeg:q=95", cer=0.02), protocol="tokbench"))}
    entries = store.list(EntryQuery(status="all"))
    text_boards = boards(entries, "text")
    members = {b.setting: [e.id for e in b.entries] for b in text_boards}
    assert members == {
        Setting("text", None, "native"): [ids["q80 text"], ids["q50 text"]],  # the only shared column
        Setting("text-sizes", None, "native"): [ids["q20 sizes"]],
        Setting("text", None, "256"): [ids["q90 text 256"]],
        Setting("text", "tokbench", "native"): [ids["q95 text tokbench"]],
    }
    assert [b.ranks for b in text_boards] == [[1, 2], [1], [1], [1]]
    # a protocol covers the whole run: the tokbench-protocol entry's reconstruction is ranked apart too
    assert [[e.id for e in b.entries] for b in boards(entries, "reconstruction")] == [
        [ids["q50 text"], ids["q80 text"], ids["q20 sizes"], ids["q90 text 256"]], [ids["q95 text tokbench"]]]

    page = render_index(entries)
    tables = re.findall(r'<table class="lb-table" data-task="text" data-setting="([^"]*)">(.*?)</table>', page, re.S)
    assert len(tables) == 4
    for key, body in tables:
        rows = {int(i) for i in re.findall(r'<tr data-entry="(\d+)"', body)}
        assert len({Entry.setting(store.get(i), "text") for i in rows}) == 1, key
        assert not ({ids["q50 text"], ids["q20 sizes"]} <= rows)
    selector = page[page.index('<select data-setting-select="text">'):]
    assert selector[:selector.index("</select>")].count("<option") == 4
    assert page.count("data-setting-select") == 2  # text and reconstruction: one selector each
    assert "text-sizes · no protocol · native px" not in page and "text-sizes · no protocol · native" in page

    frame = entries_frame(entries, "text")  # the CLI table: grouped by setting, setting column shown
    assert list(frame["text.setting"])[:2] == ["text · no protocol · native"] * 2
    assert frame["text.setting"].nunique() == 4


def test_protocol_field_is_read_tolerantly():
    assert protocol_name(make_results()) is None
    for value, expected in (({"name": "llamagen-rfid", "resolution": 256}, "llamagen-rfid"), (None, None),
                            ("tokbench", None), ({"name": ""}, None), ({"nom": "x"}, None)):
        assert protocol_name({**make_results(), "protocol": value}) == expected
    settings = task_settings(on(make_results(), protocol="tokbench"))
    assert settings == {"reconstruction": Setting("photos", "tokbench", "256"),
                        "text": Setting("text", "tokbench", "native")}


def test_migration_fills_in_the_settings_of_entries_stored_before_it(tmp_path):
    from alembic import command
    from sqlalchemy import text

    from tokbench.leaderboard.store import _alembic_config, engine_for

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = engine_for(url)
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        command.upgrade(_alembic_config(conn), "0001")
    results = on(make_results("old-entry"), suite="text-sizes", protocol="var-rfid")
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        conn.execute(text("INSERT INTO api_tokens (id, name, token_hash, created) VALUES (1, 'a', 'h', '2025-01-01')"))
        conn.execute(text(
            "INSERT INTO submissions (id, created, token_id, status, status_reasons, tokenizer_name, family, kind, "
            "parameters, tokbench_version, duplicate_key, results_sha256, results_json) VALUES (1, '2025-01-01', 1, "
            "'verified', '[]', 'old-entry', 'jpeg', 'discrete', 1, '0.1.0', 'k', 's', :results)"),
            {"results": json.dumps(results)})
    engine.dispose()
    store = Store(url)
    try:
        entry = store.get(1)
        assert store.revision == "0002" and entry.protocol == "var-rfid"
        assert entry.setting("text") == Setting("text-sizes", "var-rfid", "native")
        assert entry.setting("reconstruction") == Setting("photos", "var-rfid", "256")
    finally:
        store.close()


def test_compare_warns_when_runs_differ_in_suite_protocol_or_resolution(tmp_path, capsys):
    same = [make_results("a"), make_results("b")]
    assert comparability_warnings(same) == []
    runs = [make_results("jpeg:q=50"), on(make_results("jpeg:q=20"), suite="text-sizes", protocol="tokbench")]
    reconstruction, text = comparability_warnings(runs)  # one line per task; the protocol covers both
    assert reconstruction.startswith("reconstruction: the runs differ in protocol, so")
    assert text.startswith("text: the runs differ in suite and protocol, so their text scores are not comparable")
    assert "jpeg:q=50: text · no protocol · native" in text and "jpeg:q=20: text-sizes · protocol tokbench" in text
    runs = [make_results("x"), on(make_results("y"), resolution="256")]
    assert [w.split(":")[0] for w in comparability_warnings(runs)] == ["text"]

    paths = []
    for i, results in enumerate([make_results("jpeg:q=50"), on(make_results("jpeg:q=20"), suite="text-sizes")]):
        path = tmp_path / f"run{i}.json"
        path.write_text(json.dumps(results))
        paths.append(str(path))
    assert main(["compare", *paths]) == 0
    err = capsys.readouterr().err
    assert "warning: text: the runs differ in suite" in err and "reconstruction" not in err


@pytest.mark.parametrize("spec, shown", [
    ("llamagen-vq16:weights=../shared/adapter-fixtures/llamagen/vq_ds16_c2i.pt", "llamagen-vq16"),
    ("jpeg:q=50", "jpeg:q=50"),
    ("var-d16:scales=[1,2,3],weights=/home/me/var/vae_ch160v4096z32.pth", "var-d16:scales=[1,2,3]"),
    ("runs/vq-tiny/last.ckpt", "vq-tiny/last.ckpt"),
    ("/data/ckpts/my-tokenizer", "ckpts/my-tokenizer"),
    ("titok:weights=C:\\models\\titok.bin,tokens=32", "titok:tokens=32"),
    ("<b>not/a path</b>", "<b>not/a path</b>"),  # markup is not a path: kept (and escaped by the template)
])
def test_display_names_drop_local_paths(spec, shown):
    assert display_name(spec) == shown


def test_badges_say_what_was_checked_and_reasons_are_grouped():
    verified = {c.key: c for c in checks("verified", [], "ab" * 32)}
    assert [(k, c.ok) for k, c in verified.items()] == [("datasets", True), ("weights", True), ("reproduced", False)]
    assert "abab" in verified["weights"].detail
    codec = {c.key: c for c in checks("unverified", [{"field": "$.datasets[0].name", "reason": "not known"}], None)}
    assert not codec["datasets"].ok and "not known" in codec["datasets"].detail and not codec["weights"].ok
    reasons = {m: "no LPIPS weights (run tokbench weights fetch lpips)" for m in ("lpips", "rfid")} | {"x": "other"}
    assert grouped_reasons(reasons) == [(["lpips", "rfid"], reasons["lpips"]), (["x"], "other")]
    assert [plural(n, "entry") for n in (0, 1, 2, 1000)] == ["0 entries", "1 entry", "2 entries", "1,000 entries"]
    assert [count(v) for v in (256.0, 1024, 680.0, 12.5, None)] == ["256", "1,024", "680", "12.50", "—"]


def test_entry_page_names_protocol_recognizer_and_states_a_repeated_reason_once(store):
    results = on(make_results("llamagen-vq16:weights=../fixtures/vq.pt", tokens=256), protocol="tokbench")
    why = "needs weights that are not installed (tokbench weights fetch)"
    results["tasks"]["text"]["skipped_metrics"] = {f"word_acc_{b}": why for b in ("small", "medium", "large", "all")}
    results["tasks"]["text"]["extra"]["protocol"] = {"text_protocol": "own", "ocr": "tesseract 5.3.0"}
    entry_id = add(store, results)
    entry = store.get(entry_id)
    assert entry.settings["text"]["recognizer"] == "tesseract 5.3.0"
    page = render_entry(entry, json.loads(store.results(entry_id)))
    text = re.sub(r"<[^>]+>", "", page)
    assert text.count(why) == 1
    assert "word accuracy, small text, word accuracy, medium text" in text
    assert "tesseract 5.3.0 (text)" in text
    assert "tokbench (resolution: 256, preprocessing: resize-crop, deviations: none)" in text
    assert "llamagen-vq16:weights=../fixtures/vq.pt" in text  # the full spec, on the entry page only
    assert "Test set: text · protocol tokbench · native." in text
    assert "<dt>tokens / image</dt><dd>256</dd>" in page  # a count, not "256.0"
    index = render_index(store.list(EntryQuery(status="all")))
    assert "../fixtures" not in index and "llamagen-vq16" in index


def test_plot_names_every_point_on_a_log_bits_axis():
    points = [Point(i, f"tokenizer-{i}-with-a-long-name", "vq", bits, 20 + i % 4)
              for i, bits in enumerate([300, 310, 320, 2000, 2100, 40000, 41000, 42000, 43000, 90000], start=1)]
    plot = build_plot(points, "psnr", True)
    assert [label for _, label in plot.x_ticks] == ["1,000", "10,000", "100,000"]  # decades: log
    left, right = plot.margin["left"], plot.width - plot.margin["right"]
    boxes = []
    for p in plot.points:
        assert p.short_label.startswith(f"tokenizer-{p.entry_id}-")
        width = len(p.short_label) * 6.2
        x0 = p.label_x if p.label_anchor == "start" else p.label_x - width
        assert left <= x0 and x0 + width <= right + 0.01
        assert abs(p.label_y - p.py) <= 40  # beside its point
        boxes.append((x0, p.label_y - 11, x0 + width, p.label_y))
    overlaps = sum(1 for i, a in enumerate(boxes) for b in boxes[i + 1:]
                   if min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1]))
    assert overlaps == 0
    single = build_plot([Point(1, "only", "vq", 4096, 30.0)], "psnr", True)
    assert single.x_ticks and single.points[0].label_x > 0


def test_rank_shares_ranks_on_ties_and_puts_missing_scores_last():
    def entry(i: int, psnr: float | None) -> Entry:
        metrics = {"reconstruction": {"psnr": {"mean": psnr, "ci95": [psnr, psnr], "n": 1}} if psnr else {"ssim": {}}}
        return Entry(i, "", "verified", [], f"t{i}", "vq", "discrete", None, 1, 256.0, 4096.0, "0.1.0", "a", metrics,
                     settings={"reconstruction": {"suite": "photos", "resolution": "256"}})

    ordered, ranks = rank([entry(1, 30.0), entry(2, None), entry(3, 32.0), entry(4, 30.0)], "reconstruction", "psnr")
    assert [e.id for e in ordered] == [3, 1, 4, 2] and ranks == [1, 2, 2, None]


def test_entry_from_an_older_server_without_settings():
    data = Entry(1, "", "verified", [], "t", "vq", "discrete", None, 1, None, None, "0.1.0", "a").to_dict()
    for key in ("protocol", "settings"):
        data.pop(key)
    entry = Entry.from_dict(data)
    assert entry.protocol is None and entry.settings == {} and entry.setting("text") is None
