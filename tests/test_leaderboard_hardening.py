"""Bad input against a live leaderboard server (SQLite, and PostgreSQL where it is installed).

Each hostile submission or request must get a 4xx naming the field, and leave the database
exactly as it was; none may crash the server (500) or store an entry it cannot serve back.
Also: the terminal output of ``tokbench leaderboard show`` / ``submit`` carries no control
characters from submitted names.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import func, select
from test_leaderboard_api import ThreadedServer
from test_leaderboard_store import postgres_server
from test_results_schema import FINGERPRINTS, make_results

from tokbench.leaderboard.app import Settings, asgi_app
from tokbench.leaderboard.models import metric_values, submissions
from tokbench.leaderboard.store import Store
from tokbench.leaderboard.validation import MAX_DEPTH, KnownSuite
from tokbench.results import load_schema

HTTP = httpx.Client(timeout=60)


@pytest.fixture(scope="module", autouse=True)
def _close_http_client():
    yield
    HTTP.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request, tmp_path_factory):
    """A running server over each backend: (url, store, token). One per module: tests check row counts."""
    def serve(url: str):
        store = Store(url)
        settings = Settings(known_suites={k: KnownSuite(v) for k, v in FINGERPRINTS.items()},
                            max_body_bytes=4 * 1024 * 1024, rate_limit=(10_000, 60.0))
        token = store.create_token("mallory")
        server = ThreadedServer(asgi_app(store, settings)).__enter__()
        return store, token, server

    if request.param == "sqlite":
        store, token, server = serve(f"sqlite:///{tmp_path_factory.mktemp('lb') / 'lb.db'}")
        yield server.url, store, token
        server.__exit__(None, None, None)
        store.close()
    else:
        with postgres_server() as url:
            store, token, server = serve(url)
            yield server.url, store, token
            server.__exit__(None, None, None)
            store.close()


def snapshot(store: Store) -> tuple[int, int, int | None]:
    """(submissions, metric rows, newest id): what must not change after a refusal."""
    with store.engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(submissions)).scalar_one(),
                conn.execute(select(func.count()).select_from(metric_values)).scalar_one(),
                conn.execute(select(func.max(submissions.c.id))).scalar())


def post(url: str, token: str, body: bytes) -> httpx.Response:
    return HTTP.post(f"{url}/api/submissions", content=body,
                     headers={"authorization": f"Bearer {token}", "content-type": "application/json"})


def nested_config(levels: int) -> bytes:
    """A results file whose tokenizer config is ``levels`` objects deep (built as text: json.dumps would recurse)."""
    text = json.dumps(make_results())
    assert '"config": {"q": 50}' in text
    return text.replace('"config": {"q": 50}', '"config": ' + '{"a": ' * levels + "1" + "}" * levels).encode()


def changed(change: Callable[[dict], None]) -> bytes:
    results = make_results()
    change(results)
    return json.dumps(results).encode()  # ensure_ascii: a lone surrogate travels as the escape \ud800


def _metric_named(name: str) -> Callable[[dict], None]:
    return lambda r: r["tasks"]["reconstruction"]["metrics"].update({name: r["tasks"]["reconstruction"]["metrics"]["ssim"]})


def _task_named(name: str) -> Callable[[dict], None]:
    return lambda r: r["tasks"].update({name: r["tasks"]["text"]})


BAD_SUBMISSIONS = [
    # 7: nesting that exhausts the parser's recursion
    ("100k [", b"[" * 100_000, "$"),
    ("config 1000 deep", nested_config(1000), "$"),
    # 8: nesting the parser survives but serialization of the entry would not
    ("config 300 deep", nested_config(300), "$.tokenizer.config"),
    ("config one level too deep", nested_config(MAX_DEPTH - 1), "$.tokenizer.config"),
    # 9: integers beyond the columns
    ("parameters 2**63", changed(lambda r: r["tokenizer"].update(parameters=2**63)), "$.tokenizer.parameters"),
    ("n 10**30", changed(lambda r: r["tasks"]["reconstruction"]["metrics"]["psnr"].update(n=10**30)),
     "$.tasks.reconstruction.metrics.psnr.n"),
    ("n 2**40", changed(lambda r: r["tasks"]["text"]["metrics"]["cer_gt"].update(n=2**40)),
     "$.tasks.text.metrics.cer_gt.n"),
    ("tokens_per_image 10**400", changed(lambda r: r["tokenizer"].update(tokens_per_image=10**400)),
     "$.tokenizer.tokens_per_image"),
    ("a 5000-digit integer", json.dumps(make_results()).replace('"parameters": 1234', '"parameters": ' + "9" * 5000)
     .encode(), "$"),
    # 10: strings no column can hold
    ("lone surrogate in the name", changed(lambda r: r["tokenizer"].update(name="vq\ud800")), "$.tokenizer.name"),
    ("lone surrogate in a config key", changed(lambda r: r["tokenizer"]["config"].update({"\udfff": 1})),
     "$.tokenizer.config"),
    ("lone surrogate in a task name", changed(_task_named("t\ud834")), "$.tasks"),
    ("lone surrogate in a dataset name", changed(lambda r: r["datasets"][0].update(name="ph\ud800otos")),
     "$.datasets[0].name"),
    ("NUL in the name", changed(lambda r: r["tokenizer"].update(name="vq\x00")), "$.tokenizer.name"),
    ("NUL in the family", changed(lambda r: r["tokenizer"].update(family="v\x00q")), "$.tokenizer.family"),
    ("NUL in the version", changed(lambda r: r["tokbench"].update(version="0.1.0\x00")), "$.tokbench.version"),
    ("NUL in a metric name", changed(_metric_named("ss\x00im")), "$.tasks.reconstruction.metrics"),
    ("task name of 101 characters", changed(_task_named("t" * 101)), "$.tasks"),
    ("metric name of 101 characters", changed(_metric_named("m" * 101)), "$.tasks.reconstruction.metrics"),
    # a valid PEP 440 version (a local label), accepted by the server's specifier, 65 characters long
    ("version of 65 characters", changed(lambda r: r["tokbench"].update(version="0.1.0+" + "a" * 59)),
     "$.tokbench.version"),
]


@pytest.mark.parametrize("body, field", [case[1:] for case in BAD_SUBMISSIONS], ids=[c[0] for c in BAD_SUBMISSIONS])
def test_hostile_submissions_get_422_naming_the_field_and_store_nothing(live, body, field):
    url, store, token = live
    before = snapshot(store)
    answer = post(url, token, body)
    assert answer.status_code == 422, answer.text[:500]
    errors = answer.json()["errors"]
    assert any(e["field"] == field or e["field"].startswith(field + ".") for e in errors), errors
    assert all("\n" not in e["reason"] for e in errors)  # one line each
    assert snapshot(store) == before
    assert HTTP.get(f"{url}/api/health").status_code == 200


def test_nesting_up_to_the_limit_is_stored_and_served(live):
    url, store, token = live
    answer = post(url, token, nested_config(MAX_DEPTH - 2))  # $ > tokenizer > config: the deepest allowed
    assert answer.status_code == 201, answer.text[:500]
    entry_id = answer.json()["id"]
    for path in (f"/api/entries/{entry_id}", f"/entries/{entry_id}", f"/api/entries/{entry_id}/results.json"):
        assert HTTP.get(url + path).status_code == 200, path


def test_integers_in_float_columns_are_stored_as_floats(live):
    url, store, token = live

    def huge(r: dict) -> None:
        r["tasks"]["reconstruction"]["metrics"]["rfid"] = {"mean": 10**30, "ci95": [10**30, 10**30], "n": 8,
                                                                "higher_is_better": True}
        r["tokenizer"]["tokens_per_image"] = 10**20

    answer = post(url, token, changed(huge))
    assert answer.status_code == 201, answer.text[:500]
    entry = HTTP.get(f"{url}/api/entries/{answer.json()['id']}").json()
    assert entry["metrics"]["reconstruction"]["rfid"]["mean"] == 1e30 and entry["tokens_per_image"] == 1e20
    assert entry["results"]["tokenizer"]["tokens_per_image"] == 10**20  # the file itself is kept verbatim


BAD_READS = [
    ("/api/entries/999999999999999999999", 404, "path"),
    ("/entries/999999999999999999999", 404, "path"),
    ("/api/entries/999999999999999999999/results.json", 404, "path"),
    ("/api/entries/2147483648", 404, "path"),
    ("/entries/2147483648", 404, "path"),
    ("/api/entries/-9223372036854775809", 404, "path"),
    ("/api/entries?offset=99999999999999999999999", 422, "offset"),
    ("/api/entries?offset=2147483648", 422, "offset"),
    ("/api/entries?q=%00", 422, "q"),
    ("/api/entries?family=vq%00", 422, "family"),
    ("/api/entries?family=" + "f" * 101, 422, "family"),
    ("/api/entries?min_tokens=nan", 422, "min_tokens"),
    ("/api/entries?max_bits=inf", 422, "max_bits"),
    ("/?max_tokens=nan", 422, "max_tokens"),
]


@pytest.mark.parametrize("path, status, field", BAD_READS, ids=[r[0] for r in BAD_READS])
def test_out_of_range_reads_get_404_or_422(live, path, status, field):
    url, store, _ = live
    before = snapshot(store)
    answer = HTTP.get(url + path)
    assert answer.status_code == status, answer.text[:500]
    assert any(e["field"] == field for e in answer.json()["errors"]), answer.text
    assert snapshot(store) == before


def test_schema_maxima_are_the_columns_limits():
    schema = load_schema()
    tok = schema["properties"]["tokenizer"]["properties"]
    task = schema["properties"]["tasks"]
    metric = task["additionalProperties"]["properties"]["metrics"]
    assert tok["parameters"]["maximum"] == 2**63 - 1  # BigInteger
    assert metric["additionalProperties"]["properties"]["n"]["maximum"] == 2**31 - 1  # Integer (PostgreSQL int4)
    assert schema["properties"]["tokbench"]["properties"]["version"]["maxLength"] == \
        submissions.c.tokbench_version.type.length
    assert tok["name"]["maxLength"] == submissions.c.tokenizer_name.type.length
    assert tok["family"]["maxLength"] == submissions.c.family.type.length
    assert task["propertyNames"]["maxLength"] == metric_values.c.task.type.length
    assert metric["propertyNames"]["maxLength"] == metric_values.c.metric.type.length


# -- 12: terminal output ---------------------------------------------------------------------

EVIL = "vq\x1b[2J\x1b]0;pwned\x07\x9b31m\u202eevil"


def test_show_and_submit_print_no_control_characters(tmp_path, capsys):
    from tokbench.leaderboard.cli import run_show, run_submit

    db = f"sqlite:///{tmp_path / 'lb.db'}"
    store = Store(db)
    token = store.create_token("alice")
    settings = Settings(known_suites={k: KnownSuite(v) for k, v in FINGERPRINTS.items()})
    results = make_results(name=EVIL, family="f\x1b[31m")
    results["datasets"][0]["name"] = "ph\x1b[2Jotos"  # echoed back in the "unverified because" reason
    results["tasks"]["reconstruction"]["dataset"] = "ph\x1b[2Jotos"  # and in the task's setting column
    # (metric names cannot carry control characters: only registered names are accepted)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with ThreadedServer(asgi_app(store, settings)) as server:
        run_submit(argparse.Namespace(results=str(path), server=server.url, token=token))
        printed = capsys.readouterr().out
        assert "unverified because $.datasets[0].name" in printed
        for fmt in ("table", "markdown", "csv", "html"):
            for source in ({"db": db, "server": None}, {"db": None, "server": server.url}):
                for view in ("tasks", "tokbench"):
                    run_show(argparse.Namespace(**source, task=None, family=None, status="all", sort=None, order=None,
                                                format=fmt, view=view))
                    out = capsys.readouterr().out
                    if view == "tasks":  # (the TokBench view lists entries with text/face metrics only)
                        assert "\ufffd[2J" in out, (fmt, view, out)  # the name is there, defused
                    printed += out
    store.close()
    controls = {c for c in printed if (ord(c) < 32 and c != "\n") or 0x7f <= ord(c) <= 0x9f or c == "\u202e"}
    assert controls == set()


def test_client_error_messages_carry_no_control_characters():
    from tokbench.leaderboard.client import _explain

    # What a hostile or broken server could answer: raw escape sequences in the reasons.
    answer = httpx.Response(422, json={"errors": [{"field": "$.x\x1b[2J", "reason": "bad \x1b]0;title\x07"}],
                                       "existing": {"url": "/entries/1\x1b[31m"}})
    message = _explain(answer, "http://127.0.0.1:1")
    assert "\x1b" not in message and "\x07" not in message and "\ufffd[2J" in message
