"""End to end on loopback with real processes: ``tokbench eval`` → ``tokbench submit`` → server → API, page, browser.

Also: the server killed (SIGKILL) while submissions are in flight loses no acknowledged one.
The browser tests drive Debian's Chromium through Playwright; they skip (with the reason)
only where Chromium or Playwright is missing.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from test_results_schema import FINGERPRINTS, make_results

from tokbench.leaderboard.display import display_name

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAYLOAD = '<img src=x onerror="window.pwned=1;document.title=\'pwned\'"><script>window.pwned=2</script>'
HTTP = httpx.Client(timeout=60)


@pytest.fixture(scope="module", autouse=True)
def _close_http_client():
    """Close the shared client's pooled connections (some point at a server killed mid-test)."""
    yield
    HTTP.close()


def tokbench(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tokbench", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{proc.args} failed ({proc.returncode}):\n{out}\n{err}"
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``tokbench leaderboard serve`` in a child process, logging to a file."""

    def __init__(self, workdir: Path, db: str, *extra: str):
        self.workdir, self.db, self.extra = workdir, db, extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServerProcess":
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "tokbench", "leaderboard", "serve", "--db", self.db,
                                          "--port", str(self.port), "--log-level", "warning", *self.extra],
                                         cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 180) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if HTTP.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail(f"server not ready after {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """Two real eval runs (JPEG q=20 and q=80 on the whole built-in photo suite, 64 px), a server, a CLI token.

    The server computes the built-in suites' fingerprints itself (no --known-suites), so the
    two runs are verified against the real suite. Everything starts at once: 2 cores.
    """
    work = tmp_path_factory.mktemp("e2e")
    db = f"sqlite:///{work / 'leaderboard.db'}"
    from tokbench.leaderboard.store import Store

    Store(db).close()  # schema in place before three processes open the database at once
    token_proc = tokbench("leaderboard", "token", "create", "e2e", "--db", db, cwd=work)
    server = ServerProcess(work, db).start()
    runs = {q: tokbench("eval", "--tokenizer", f"jpeg:q={q}", "--tasks", "reconstruction", "--resolution", "64",
                        "--skip-metric", "lpips,rfid", "--out", str(work / f"q{q}"), cwd=work) for q in (20, 80)}
    try:
        token = finish(token_proc).strip()
        for proc in runs.values():
            finish(proc)
        server.wait_ready()
        yield {"work": work, "db": db, "token": token, "server": server,
               "results": {q: work / f"q{q}" / "results.json" for q in runs}}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def submitted(e2e):
    """Both eval results submitted with ``tokbench submit``: {quality: entry id}."""
    procs = {q: tokbench("submit", str(path), "--server", e2e["server"].url, "--token", e2e["token"], cwd=e2e["work"])
             for q, path in e2e["results"].items()}
    ids = {}
    for q, proc in procs.items():
        out = finish(proc)
        assert "(verified)" in out, out
        ids[q] = int(out.split("entry ")[1].split()[0])
    return ids


def test_eval_results_round_trip_through_api_and_page(e2e, submitted):
    url = e2e["server"].url
    for q, entry_id in submitted.items():
        original = e2e["results"][q].read_text()
        assert HTTP.get(f"{url}/api/entries/{entry_id}/results.json").text == original
        entry = HTTP.get(f"{url}/api/entries/{entry_id}").json()
        assert entry["tokenizer"] == f"jpeg:q={q}" and entry["status"] == "verified"
        assert entry["results"] == json.loads(original)
        assert f"jpeg:q={q}" in HTTP.get(f"{url}/entries/{entry_id}").text
    listing = HTTP.get(f"{url}/api/entries", params={"task": "reconstruction", "family": "jpeg"}).json()["entries"]
    assert [e["tokenizer"] for e in listing] == ["jpeg:q=80", "jpeg:q=20"]  # higher PSNR first
    psnr = [e["metrics"]["reconstruction"]["psnr"]["mean"] for e in listing]
    assert psnr[0] > psnr[1]
    page = HTTP.get(f"{url}/").text
    assert "jpeg:q=20" in page and "jpeg:q=80" in page and "<svg" in page
    again = tokbench("submit", str(e2e["results"][20]), "--server", url, "--token", e2e["token"], cwd=e2e["work"])
    _, err = again.communicate(timeout=120)
    assert again.returncode == 1 and f"duplicate of entry {submitted[20]}" in err


# -- browser ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); CI installs it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _png(data: bytes):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _new_page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    dialogs, errors = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: errors.append(str(e)))
    return context, page, dialogs, errors


def _distance(a, b) -> float:
    """Mean absolute pixel difference over the common area (rows may differ by a sub-pixel in height)."""
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    return float(abs(a[:h, :w].astype(int) - b[:h, :w].astype(int)).mean())


def _check_sorting(page, ids: dict[int, int], shots: Path) -> None:
    table = page.locator("table.lb-table[data-task=reconstruction]")
    rows = table.locator("tbody tr")

    def order():
        return [int(r) for r in rows.evaluate_all("rs => rs.map(r => r.dataset.entry)")]

    assert order() == [ids[80], ids[20]]
    before = [_png(rows.nth(i).screenshot()) for i in range(2)]
    page.screenshot(path=str(shots / "before-sort.png"), full_page=True)
    different = _distance(before[0], before[1])
    assert different > 1.0  # two visibly different rows
    table.locator("button[data-sort-col=bits_per_image]").click()
    assert order() == [ids[20], ids[80]]
    after = [_png(rows.nth(i).screenshot()) for i in range(2)]
    page.screenshot(path=str(shots / "after-sort.png"), full_page=True)
    # On screen, the rows swapped places: each new row looks like the other old one.
    assert _distance(after[0], before[1]) < different / 4 and _distance(after[1], before[0]) < different / 4
    assert table.locator("th[aria-sort=ascending]").inner_text().startswith("bits / image")
    table.locator("button[data-sort-col=bits_per_image]").click()
    assert order() == [ids[80], ids[20]]


def test_page_in_browser_sorts_and_keeps_payload_inert(e2e, submitted, browser, tmp_path):
    url = e2e["server"].url
    context, page, dialogs, errors = _new_page(browser, tmp_path)
    page.goto(url)
    assert page.locator("table.lb-table[data-task=reconstruction] tbody tr").count() == 2
    _check_sorting(page, submitted, tmp_path)
    assert page.locator("svg.rd-plot circle.pt").count() == 2

    # A results file with HTML/JS in the tokenizer name: stored, shown as text, never run.
    evil = json.loads(e2e["results"][20].read_text())
    evil["tokenizer"].update(name=PAYLOAD, config={"q": 21})
    answer = HTTP.post(f"{url}/api/submissions", content=json.dumps(evil),
                       headers={"authorization": f"Bearer {e2e['token']}"})
    assert answer.status_code == 201, answer.text
    evil_id = answer.json()["id"]
    try:
        # rendered as literal text: the leaderboard its display name (48 characters), the entry page the whole
        for target, shown in ((url, display_name(PAYLOAD)), (f"{url}/entries/{evil_id}", PAYLOAD)):
            page.goto(target)
            page.wait_for_load_state("load")
            assert page.evaluate("() => window.pwned") is None
            assert page.title() != "pwned" and dialogs == []
            assert page.locator("img").count() == 0
            assert page.get_by_text(shown, exact=True).count() >= 1
        page.goto(url)
        name_cell = page.locator(f"tr[data-entry='{evil_id}'] td.name a").first
        assert name_cell.text_content() == display_name(PAYLOAD) and display_name(PAYLOAD).startswith("<img src=x")
        page.screenshot(path=str(tmp_path / "with-payload.png"), full_page=True)
        # Filtering by token budget / family on the client hides rows and plot points.
        page.fill("#filter-max-bits", "1")
        assert page.locator("table.lb-table[data-task=reconstruction] tbody tr:not([hidden])").count() == 0
        assert page.locator("svg.rd-plot circle.pt:not(.filtered)").count() == 0
        page.fill("#filter-max-bits", "")
        page.select_option("#filter-family", "jpeg")
        assert page.locator("table.lb-table[data-task=reconstruction] tbody tr:not([hidden])").count() == 3
    finally:
        with sqlite3.connect(e2e["work"] / "leaderboard.db") as raw:  # leave the module's data as it was
            raw.execute("DELETE FROM metric_values WHERE submission_id = ?", (evil_id,))
            raw.execute("DELETE FROM task_settings WHERE submission_id = ?", (evil_id,))
            raw.execute("DELETE FROM submissions WHERE id = ?", (evil_id,))
        context.close()
    assert errors == []


def test_static_export_in_browser(e2e, submitted, browser, tmp_path):
    site = tmp_path / "site"
    finish(tokbench("leaderboard", "export", "--db", e2e["db"], "--out", str(site), cwd=e2e["work"]))
    context, page, dialogs, errors = _new_page(browser, tmp_path)
    page.goto((site / "index.html").as_uri())
    assert page.evaluate("() => getComputedStyle(document.body).lineHeight") == "20px"  # our CSS was found
    _check_sorting(page, submitted, tmp_path)
    page.locator(f"tr[data-entry='{submitted[20]}'] td.name a").click()
    assert page.locator("h1").inner_text() == "jpeg:q=20"
    assert errors == [] and dialogs == []
    context.close()


# -- crash safety ----------------------------------------------------------------------------

def test_sigkill_mid_submission_loses_no_acknowledged_entry(tmp_path):
    from tokbench.leaderboard.store import Store

    db = f"sqlite:///{tmp_path / 'crash.db'}"
    store = Store(db)
    token = store.create_token("crash")
    store.close()
    known = tmp_path / "known.json"
    known.write_text(json.dumps(FINGERPRINTS))
    args = ("--known-suites", str(known), "--rate-limit", "1000/60")
    server = ServerProcess(tmp_path, db, *args).start().wait_ready()
    acknowledged: dict[str, int] = {}
    lock, killed = threading.Lock(), threading.Event()

    def submit(i: int) -> None:
        name = f"crash-{i}"
        try:
            r = HTTP.post(f"{server.url}/api/submissions", content=json.dumps(make_results(name=name)),
                          headers={"authorization": f"Bearer {token}"}, timeout=30)
        except httpx.HTTPError:
            return  # in flight when the server died: may or may not be stored
        if r.status_code == 201:
            with lock:
                acknowledged[name] = r.json()["id"]
                if len(acknowledged) >= 15 and not killed.is_set():
                    killed.set()
                    os.kill(server.proc.pid, signal.SIGKILL)

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(submit, range(200)))
        assert killed.is_set(), "the server was not killed"
        server.proc.wait(30)
        assert server.proc.returncode == -signal.SIGKILL
        with sqlite3.connect(tmp_path / "crash.db") as raw:
            assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        restarted = ServerProcess(tmp_path, db, *args).start().wait_ready()
        try:
            stored = {e["tokenizer"]: e for e in
                      HTTP.get(f"{restarted.url}/api/entries", params={"status": "all", "limit": 1000}).json()["entries"]}
            assert set(acknowledged) <= set(stored)
            assert all(stored[name]["id"] == i for name, i in acknowledged.items())
            assert len(stored) < 200  # it really died mid-way
            # Nothing half-stored: every entry has all its metrics and its results file.
            assert all(sum(len(m) for m in e["metrics"].values()) == 4 for e in stored.values())
            for e in stored.values():
                assert json.loads(HTTP.get(f"{restarted.url}/api/entries/{e['id']}/results.json").text)["tokenizer"][
                    "name"] == e["tokenizer"]
            after = HTTP.post(f"{restarted.url}/api/submissions", content=json.dumps(make_results(name="after")),
                              headers={"authorization": f"Bearer {token}"})
            assert after.status_code == 201
        finally:
            restarted.stop()
    finally:
        server.stop()
