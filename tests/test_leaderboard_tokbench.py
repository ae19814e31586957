"""The leaderboard's TokBench view: T-ACC / T-NED / F-Sim per size bucket, columns from the metric registry."""
from __future__ import annotations

import json
import re

import httpx
import pytest
from test_leaderboard_api import lb  # noqa: F401  (a fixture: a live server on loopback)
from test_results_schema import _metric, make_results

from tokbench.leaderboard.query import EntryQuery
from tokbench.leaderboard.table import format_tokbench
from tokbench.metrics import declaration
from tokbench.metrics.declaration import Metric
from tokbench.metrics.registry import is_registered

HTTP = httpx.Client(timeout=30)
BUCKETS = ("small", "medium", "large", "mean")


@pytest.fixture(scope="module", autouse=True)
def _close_http_client():
    yield
    HTTP.close()


@pytest.fixture
def text_metrics(monkeypatch):
    """TokBench's text metrics: the text-protocol task's declarations where installed, else
    stand-ins registered for this test only (removed again afterwards)."""
    for prefix, title in (("tacc", "T-ACC"), ("tned", "T-NED")):
        for bucket in BUCKETS:
            name = f"{prefix}_{bucket}"
            if not is_registered(name):
                monkeypatch.setitem(declaration._metrics, name,
                                    Metric(name, f"{title}, {bucket}", f"stand-in for the text task's {name}", True,
                                           low=0.0, high=1.0))


def with_faces(results: dict, sims: tuple[float, float, float]) -> dict:
    """``results`` plus a faces task (unverified: its dataset is not a suite the server knows)."""
    results["datasets"].append({"name": "faces", "source": "folder", "version": "1", "fingerprint": "c" * 64,
                                "num_images": 4, "resolution": "256"})
    metrics = {f"face_sim_{b}": _metric(s, 0.01, 10, True) for b, s in zip(BUCKETS, sims)}
    mean = sum(sims) / 3
    metrics["face_sim_mean"] = {"mean": mean, "ci95": [mean, mean], "n": 30, "higher_is_better": True}
    results["tasks"]["faces"] = {"dataset": "faces", "num_images": 4, "num_skipped": 0, "skipped": [],
                                 "metrics": metrics, "skipped_metrics": {}, "extra": {}}
    return results


def post(url: str, results: dict, token: str) -> None:
    answer = HTTP.post(f"{url}/api/submissions", content=json.dumps(results), headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == 201, answer.text


def header_cells(page: str) -> list[str]:
    head = page[page.index("<thead>"):page.index("</thead>")]
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<th[^>]*>.*?</th>", head, re.S)]


def test_view_shows_face_buckets_and_only_the_text_columns_that_exist(lb, text_metrics):  # noqa: F811
    url, store, token, _ = lb
    post(url, with_faces(make_results(name="faces-only"), (0.80, 0.90, 0.97)), token)
    page = HTTP.get(f"{url}/tokbench")
    assert page.status_code == 200
    cells = header_cells(page.text)
    assert cells[:3] == ["tokenizer", "status", "recognizer"] and "F-Sim" in cells
    assert not any(c.startswith(("T-ACC", "T-NED")) for c in cells)  # registered, but no entry reports them: no column
    assert [c for c in cells if c.endswith("↑")] == ["small ↑", "medium ↑", "large ↑", "mean ↑"]
    assert re.search(r'data-metric="face_sim_small"', page.text)
    row = page.text[page.text.index('<tr data-entry="1">'):]
    assert [v for v in re.findall(r"<td data-value=\"([^\"]*)\">", row)[:4]] == ["0.8", "0.9", "0.97",
                                                                                repr((0.80 + 0.90 + 0.97) / 3)]
    assert "unverified" in row  # runs on folders (TokBench's own data) are listed too

    text = make_results(name="text-and-faces")
    text_values = {"tacc": (0.3, 0.5, 0.7, 0.5), "tned": (0.5, 0.7, 0.9, 0.7)}
    text["tasks"]["text"]["metrics"].update({f"{p}_{b}": _metric(v, 0.05, 7, True) for p, values in text_values.items()
                                             for b, v in zip(BUCKETS, values)})
    post(url, with_faces(text, (0.70, 0.85, 0.95)), token)
    page = HTTP.get(f"{url}/tokbench").text
    cells = header_cells(page)
    assert [c for c in cells if c.startswith(("T-", "F-"))] == ["T-ACC (%)", "T-NED (%)", "F-Sim"]
    assert len([c for c in cells if c.endswith("↑")]) == 12
    body = page[page.index("<tbody>"):]
    assert body.index("text-and-faces") < body.index("faces-only")  # ranked by T-ACC mean; without it last
    row = body[body.index('<tr data-entry="2">'):body.index("</tr>")]
    assert re.findall(r"<td data-value=\"([^\"]*)\">", row)[:4] == ["0.3", "0.5", "0.7", "0.5"]
    # shown in percent like TokBench's table (T-ACC, T-NED), F-Sim as the similarity it is
    assert re.findall(r"<td data-value=\"[^\"]*\">([^<]*)</td>", row)[:9] == [
        "30.00", "50.00", "70.00", "50.00", "50.00", "70.00", "90.00", "70.00", "0.7000"]
    first = body[body.index('<tr data-entry="1">'):]
    assert first[:first.index("</tr>")].count("—") == 9  # the faces-only entry has no recognizer and no text values

    only_verified = HTTP.get(f"{url}/tokbench", params={"status": "verified"}).text
    assert "No entry reports any of these metrics yet" in only_verified
    assert HTTP.get(f"{url}/tokbench", params={"status": "bogus"}).status_code == 422
    assert 'href="/tokbench"' in HTTP.get(url).text  # linked from the leaderboard page

    entries = store.list(EntryQuery(status="all"))
    csv = format_tokbench(entries, "csv").splitlines()
    assert csv[0] == ("id,tokenizer,status,recognizer,setting,"
                      + ",".join(f"{g} {b}" for g in ("T-ACC", "T-NED", "F-Sim") for b in BUCKETS))
    setting = "faces: faces · no protocol · 256 px; text: text · no protocol · native"
    assert csv[1].startswith(f"2,text-and-faces,unverified,,{setting},0.3,0.5,0.7,0.5,0.5,0.7,0.9,0.7,0.7,0.85,0.95,")
    assert "T-ACC mean (%)" in format_tokbench(entries, "markdown") and "50.00" in format_tokbench(entries, "markdown")
    assert "faces-only" in format_tokbench(entries, "table")
