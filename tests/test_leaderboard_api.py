"""The leaderboard server over real HTTP on loopback (uvicorn in a thread): API, security, concurrency, CLI."""
from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn
from test_results_schema import FINGERPRINTS, make_results

from tokbench.leaderboard.app import Settings, asgi_app
from tokbench.leaderboard.client import LeaderboardClient, SubmissionRefused
from tokbench.leaderboard.store import Store
from tokbench.leaderboard.validation import KnownSuite

# One client for the module: creating one per request costs ~0.1 s (TLS context set-up).
HTTP = httpx.Client(timeout=30)
PAYLOAD = '<img src=x onerror="document.title=\'pwned\'"><script>window.pwned=1</script>'


@pytest.fixture(scope="module", autouse=True)
def _close_http_client():
    """Close the shared client's pooled connections to the servers the tests stopped."""
    yield
    HTTP.close()


class ThreadedServer:
    """uvicorn serving the app on a free loopback port, in a background thread."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", limit_concurrency=100))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "ThreadedServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def lb(tmp_path):
    """A running server: (url, store, token, settings)."""
    store = Store(f"sqlite:///{tmp_path / 'lb.db'}")
    settings = Settings(known_suites={k: KnownSuite(v) for k, v in FINGERPRINTS.items()}, max_body_bytes=200_000,
                        rate_limit=(100, 60.0))
    token = store.create_token("alice")
    with ThreadedServer(asgi_app(store, settings)) as server:
        yield server.url, store, token, settings
    store.close()


def post(url: str, body: bytes | str, token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return HTTP.post(f"{url}/api/submissions", content=body, headers=headers, timeout=30)


def test_submit_then_read_back(lb):
    url, store, token, _ = lb
    results = make_results(name="vq-small", family="vq", tokens=256, bits=3584)
    answer = post(url, json.dumps(results), token)
    assert answer.status_code == 201, answer.text
    entry_id = answer.json()["id"]
    assert answer.json()["status"] == "verified" and answer.headers["location"] == f"/api/entries/{entry_id}"
    listing = HTTP.get(f"{url}/api/entries", params={"task": "reconstruction"}).json()
    assert [e["tokenizer"] for e in listing["entries"]] == ["vq-small"] and listing["sort"] == "psnr"
    full = HTTP.get(f"{url}/api/entries/{entry_id}").json()
    assert full["results"] == results and full["submitted_by"] == "alice"
    assert HTTP.get(f"{url}/api/entries/{entry_id}/results.json").text == json.dumps(results)
    page = HTTP.get(f"{url}/entries/{entry_id}")
    assert page.status_code == 200 and "vq-small" in page.text and "reconstruction" in page.text
    assert HTTP.get(f"{url}/api/entries/999").status_code == 404
    assert HTTP.get(f"{url}/entries/999").status_code == 404
    assert HTTP.get(f"{url}/api/health").json() == {"status": "ok", "entries": 1, "schema_revision": "0002"}


def test_authentication(lb):
    url, store, token, _ = lb
    body = json.dumps(make_results())
    missing = post(url, body, None)
    assert missing.status_code == 401 and missing.json()["errors"][0]["field"] == "authorization"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert post(url, body, "tbk_wrong").status_code == 401
    assert HTTP.post(f"{url}/api/submissions", content=body, headers={"authorization": f"Basic {token}"}).status_code == 401
    store.revoke_token("alice")
    revoked = post(url, body, token)
    assert revoked.status_code == 403 and "revoked" in revoked.json()["error"]
    assert store.count() == 0


def test_body_size_limit(lb):
    url, store, token, settings = lb
    big = make_results()
    big["tasks"]["text"]["extra"]["padding"] = "x" * settings.max_body_bytes
    response = post(url, json.dumps(big), token)
    assert response.status_code == 413 and response.json()["errors"][0]["field"] == "body"

    def chunks():  # no Content-Length: the server must count while reading
        for _ in range(30):
            yield b" " * 10_000

    streamed = HTTP.post(f"{url}/api/submissions", content=chunks(), headers={"authorization": f"Bearer {token}"})
    assert streamed.status_code == 413
    assert store.count() == 0
    assert post(url, json.dumps(make_results()), token).status_code == 201


@pytest.mark.parametrize("body, field, reason", [
    ("{not json", "$", "malformed JSON"),
    (json.dumps({**make_results(), "schema_version": 7}), "$.schema_version", "schema version 1"),
    (json.dumps(make_results(psnr=-4.0)), "$.tasks.reconstruction.metrics.psnr", "must lie in"),
    (json.dumps(make_results(cer=-1.0)), "$.tasks.text.metrics.cer_gt", "must lie in"),
    (json.dumps({k: v for k, v in make_results().items() if k != "datasets"}), "$", "'datasets' is a required property"),
])
def test_invalid_submissions_get_422_naming_the_field(lb, body, field, reason):
    url, store, token, _ = lb
    response = post(url, body, token)
    assert response.status_code == 422
    assert any(e["field"] == field and reason in e["reason"] for e in response.json()["errors"]), response.json()
    assert store.count() == 0


def test_duplicate_gets_409_with_pointer(lb):
    url, _, token, _ = lb
    results = make_results(checkpoint="f" * 64)
    first = post(url, json.dumps(results), token).json()["id"]
    again = post(url, json.dumps(results), token)
    assert again.status_code == 409
    assert again.json()["existing"] == {"id": first, "url": f"/entries/{first}", "api": f"/api/entries/{first}"}


def test_rate_limit_per_token(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'lb.db'}")
    alice, bob = store.create_token("alice"), store.create_token("bob")
    settings = Settings(known_suites={}, rate_limit=(2, 60.0))
    with ThreadedServer(asgi_app(store, settings)) as server:
        codes = [post(server.url, json.dumps(make_results()), alice).status_code for _ in range(3)]
        assert codes == [201, 201, 429]
        limited = post(server.url, json.dumps(make_results()), alice)
        assert int(limited.headers["retry-after"]) >= 1 and "rate limit" in limited.json()["error"]
        assert post(server.url, json.dumps(make_results()), bob).status_code == 201
    assert store.count() == 3
    store.close()


def test_sql_looking_strings_in_every_filter_change_nothing(lb):
    url, store, token, _ = lb
    for i in range(2):
        assert post(url, json.dumps(make_results(name=f"t{i}", tokens=256)), token).status_code == 201
    before = HTTP.get(f"{url}/api/entries", params={"status": "all"}).json()
    nasty = ["' OR '1'='1", "1; DROP TABLE submissions; --", "jpeg\" OR \"\"=\"", "%' --", "1 OR 1=1"]
    params = ["task", "family", "kind", "status", "q", "min_tokens", "max_tokens", "min_bits", "max_bits", "sort",
              "order", "limit", "offset"]
    for name in params:
        for value in nasty:
            response = HTTP.get(f"{url}/api/entries", params={name: value})
            if response.status_code == 422:
                assert response.json()["errors"][0]["field"] == name, (name, value, response.text)
            else:
                assert response.status_code == 200 and response.json()["entries"] == [], (name, value)
        page = HTTP.get(f"{url}/", params={"family": nasty[0]})
        assert page.status_code == 200 and "t0" not in page.text
    assert HTTP.get(f"{url}/api/entries", params={"status": "all"}).json() == before
    assert store.count() == 2


def test_payload_is_escaped_on_every_page(lb):
    url, _, token, _ = lb
    entry_id = post(url, json.dumps(make_results(name=PAYLOAD, family="<b>fam</b>")), token).json()["id"]
    for path in ("/", f"/entries/{entry_id}"):
        page = HTTP.get(f"{url}{path}")
        assert "<script>window.pwned" not in page.text and "<img src=x" not in page.text and "<b>fam" not in page.text
        # the page shows the name escaped: the leaderboard its first 48 characters, the entry page all of it
        assert "&lt;img src=x onerror=&#34;document.title=" in page.text
        assert path == "/" or "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
    assert HTTP.get(f"{url}/api/entries").json()["entries"][0]["tokenizer"] == PAYLOAD  # stored as submitted


def test_twenty_concurrent_submissions(lb):
    url, store, token, _ = lb
    names = [f"concurrent-{i}" for i in range(20)]
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda n: post(url, json.dumps(make_results(name=n)), token), names))
    assert [a.status_code for a in answers] == [201] * 20, [a.text for a in answers if a.status_code != 201]
    ids = [a.json()["id"] for a in answers]
    assert len(set(ids)) == 20
    stored = HTTP.get(f"{url}/api/entries", params={"status": "all"}).json()["entries"]
    assert sorted(e["tokenizer"] for e in stored) == sorted(names)
    assert all(set(e["metrics"]) == {"reconstruction", "text"} for e in stored)
    with store.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert raw.execute("SELECT count(*) FROM metric_values").fetchone()[0] == 20 * 4


def test_client_messages(lb):
    url, _, token, _ = lb
    with LeaderboardClient(url, token) as client:
        ok = client.submit_bytes(json.dumps(make_results(checkpoint="1" * 64)).encode())
        with pytest.raises(SubmissionRefused, match=rf"HTTP 409.*existing entry: {url}/entries/{ok['id']}"):
            client.submit_bytes(json.dumps(make_results(checkpoint="1" * 64)).encode())
        with pytest.raises(SubmissionRefused, match=r"HTTP 422\): \$\.tasks\.reconstruction\.metrics\.psnr: psnr must"):
            client.submit_bytes(json.dumps(make_results(psnr=200.0)).encode())
        assert [e.id for e in client.entries(status="all")] == [ok["id"]]
    with LeaderboardClient(url, "tbk_nope") as client, pytest.raises(SubmissionRefused, match="401.*--token"):
        client.submit_bytes(b"{}")
    with LeaderboardClient("http://127.0.0.1:9", token) as client, pytest.raises(RuntimeError, match="cannot reach"):
        client.submit_bytes(b"{}")


def test_cli_token_show_export(lb, tmp_path, capsys, monkeypatch):
    from tokbench.cli import main

    url, store, token, _ = lb
    db = str(store.engine.url.render_as_string())
    assert main(["leaderboard", "token", "create", "bob", "--db", db]) == 0
    bob = capsys.readouterr().out.strip()
    assert store.authenticate(bob)[1] == "bob"
    path = tmp_path / "results.json"
    path.write_text(json.dumps(make_results(name="from-cli", tokens=64, bits=640)))
    assert main(["submit", str(path), "--server", url, "--token", bob]) == 0
    assert "accepted: entry 1 (verified)" in capsys.readouterr().out
    monkeypatch.setenv("TOKBENCH_TOKEN", bob)
    assert main(["submit", str(tmp_path), "--server", url]) == 1  # same file again: duplicate
    assert "submission refused (HTTP 409)" in capsys.readouterr().err
    path.write_text(json.dumps(make_results(name="second", tokens=128, bits=1280, psnr=33.0)))
    assert main(["submit", str(path), "--server", url]) == 0
    capsys.readouterr()

    for source in (["--server", url], ["--db", db]):
        assert main(["leaderboard", "show", *source, "--task", "reconstruction", "--format", "csv"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith("id,tokenizer,family,kind,status,tokens_per_image,bits_per_image,parameters,"
                                   "reconstruction.setting,reconstruction.psnr,reconstruction.psnr.ci_low")
        assert [line.split(",")[1] for line in lines[1:]] == ["second", "from-cli"]
        assert {line.split(",")[8] for line in lines[1:]} == {"photos · no protocol · 256 px"}
    for fmt, marker in (("table", "33.00 [32.00, 34.00]"), ("markdown", "| second"), ("html", "<table")):
        assert main(["leaderboard", "show", "--db", db, "--format", fmt]) == 0
        assert marker in capsys.readouterr().out
    assert main(["leaderboard", "show", "--db", db, "--sort", "nope; --"]) == 1
    assert "sort: must be one of" in capsys.readouterr().err

    assert main(["leaderboard", "token", "revoke", "bob", "--db", db]) == 0
    assert main(["leaderboard", "token", "list", "--db", db]) == 0
    listing = capsys.readouterr().out
    assert "bob" in listing and "True" in listing and bob not in listing

    site = tmp_path / "site"
    assert main(["leaderboard", "export", "--server", url, "--out", str(site)]) == 0
    index = (site / "index.html").read_text()
    assert "second" in index and 'href="entries/1.html"' in index and 'href="static/leaderboard.css"' in index
    assert (site / "entries" / "1.json").read_text() == store.results(1)
    assert 'href="../static/leaderboard.js"' not in (site / "entries" / "1.html").read_text()  # scripts are <script src>
    assert 'src="../static/leaderboard.js"' in (site / "entries" / "1.html").read_text()
    assert {p.name for p in (site / "static").iterdir()} == {"leaderboard.css", "leaderboard.js"}
    assert main(["leaderboard", "show", "--db", f"sqlite:///{tmp_path / 'missing.db'}"]) == 1
    assert "no leaderboard database" in capsys.readouterr().err
