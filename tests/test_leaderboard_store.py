"""Leaderboard store and validation, without a server: migrations, tokens, verification, duplicates, queries."""
from __future__ import annotations

import contextlib
import json
import sqlite3

import pytest
from packaging.specifiers import SpecifierSet
from pg_server import postgres_bin, throwaway_postgres
from test_results_schema import FINGERPRINTS, make_results

from tokbench.leaderboard.limits import RateLimiter, parse_rate
from tokbench.leaderboard.plot import Point, pareto_front
from tokbench.leaderboard.query import EntryQuery
from tokbench.leaderboard.store import Store, hash_token
from tokbench.leaderboard.validation import (KnownSuite, Refused, check_submission, default_accepted_versions,
                                             load_known_suites)

KNOWN = {"photos": KnownSuite(FINGERPRINTS["photos"], 8), "text": KnownSuite(FINGERPRINTS["text"])}


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'lb.db'}")
    yield s
    s.close()


def submit(store: Store, results: dict, token_id: int = 1, known=None, accepted=None) -> int:
    candidate = check_submission(json.dumps(results).encode(), accepted or default_accepted_versions(),
                                 KNOWN if known is None else known)
    return store.add(candidate, token_id)


@pytest.fixture
def token(store):
    return store.create_token("alice")


def test_migrations_match_the_tables(store):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from tokbench.leaderboard.models import metadata

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []
    assert store.revision == "0002"


def test_sqlite_is_wal_with_durable_commits(store, tmp_path):
    with store.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert raw.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_reopen_keeps_data_and_refuses_unknown_revision(tmp_path, token):
    url = f"sqlite:///{tmp_path / 'lb.db'}"
    first = Store(url)
    entry = submit(first, make_results(), first.authenticate(token)[0])
    first.close()
    again = Store(url)
    assert again.get(entry).tokenizer == "jpeg:q=50"
    again.close()
    with sqlite3.connect(tmp_path / "lb.db") as raw:
        raw.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(RuntimeError, match="revision 9999, which this tokbench does not know"):
        Store(url)


def test_bad_database_urls(tmp_path):
    with pytest.raises(ValueError, match="not a database URL"):
        Store("definitely not a url")
    with pytest.raises(ValueError, match="unsupported database 'mysql'"):
        Store("mysql://user@host/db")
    with pytest.raises(ValueError, match="needs a SQLite file"):
        Store("sqlite://")


def test_tokens_are_stored_hashed_and_revocable(store, tmp_path):
    token = store.create_token("alice")
    assert token.startswith("tbk_") and len(token) > 40
    raw = (tmp_path / "lb.db").read_bytes() + (tmp_path / "lb.db-wal").read_bytes()
    assert token.encode() not in raw and hash_token(token).encode() in raw
    assert store.authenticate(token)[1] == "alice"
    assert store.authenticate(token + "x") is None
    with pytest.raises(ValueError, match="exists already"):
        store.create_token("alice")
    store.revoke_token("alice")
    with pytest.raises(PermissionError, match="'alice' was revoked"):
        store.authenticate(token)
    with pytest.raises(ValueError, match="no active token"):
        store.revoke_token("alice")
    assert [(t.name, t.revoked) for t in store.list_tokens()] == [("alice", True)]


def test_submission_is_stored_whole_and_verbatim(store, token):
    results = make_results()
    body = ("  " + json.dumps(results, indent=3) + "\n\n").encode()
    candidate = check_submission(body, default_accepted_versions(), KNOWN)
    entry_id = store.add(candidate, store.authenticate(token)[0])
    assert store.results(entry_id) == body.decode()
    entry = store.get(entry_id)
    assert entry.status == "verified" and entry.reasons == [] and entry.submitted_by == "alice"
    assert entry.metrics["reconstruction"]["psnr"] == results["tasks"]["reconstruction"]["metrics"]["psnr"]
    assert set(entry.metrics) == {"reconstruction", "text"}


@pytest.mark.parametrize("change, field, reason", [
    (lambda r: r["datasets"][0].update(name="my_photos"), "$.datasets[0].name", "not one of the server's known suites"),
    (lambda r: r["datasets"][1].update(fingerprint="c" * 64), "$.datasets[1].fingerprint", "does not match"),
    (lambda r: r["datasets"][0].update(num_images=3), "$.datasets[0].num_images", "evaluated on 3 of the suite's 8"),
])
def test_unverified_reasons(store, token, change, field, reason):
    results = make_results()
    change(results)
    entry = store.get(submit(store, results))
    assert entry.status == "unverified"
    assert entry.reasons[0]["field"] == field and reason in entry.reasons[0]["reason"]
    assert store.list(EntryQuery()) == [] and len(store.list(EntryQuery(status="unverified"))) == 1


def test_no_known_suites_means_all_unverified(store, token):
    assert store.get(submit(store, make_results(), known={})).status == "unverified"


def test_known_suites_file(tmp_path):
    path = tmp_path / "known.json"
    path.write_text(json.dumps({"photos": "a" * 64, "text": {"fingerprint": "b" * 64, "num_images": 17}}))
    assert load_known_suites(path) == {"photos": KnownSuite("a" * 64), "text": KnownSuite("b" * 64, 17)}
    path.write_text(json.dumps({"photos": "short"}))
    with pytest.raises(ValueError, match="photos: fingerprint must be 64 hex"):
        load_known_suites(path)


def test_duplicates_are_refused_with_pointer(store, token):
    results = make_results(checkpoint="d" * 64)
    first = submit(store, results)
    with pytest.raises(Refused) as err:
        submit(store, make_results(checkpoint="d" * 64, psnr=31.0))
    assert err.value.status == 409 and err.value.existing_id == first
    assert err.value.problems[0].field == "$.tokenizer.checkpoint_sha256"
    # Another tokbench version or another dataset is another result.
    submit(store, make_results(checkpoint="d" * 64, version="0.1.1"))
    submit(store, make_results(checkpoint="d" * 64, fingerprints={"photos": "e" * 64, "text": "b" * 64}))
    # Codecs without a checkpoint file: identity is name + config.
    submit(store, make_results(checkpoint=None))
    with pytest.raises(Refused, match="duplicate of entry"):
        submit(store, make_results(checkpoint=None))
    assert store.count() == 4


@pytest.mark.parametrize("body, field, reason", [
    (b"{oops", "$", "malformed JSON"),
    (b"[1, 2]", "$", "a results file is a JSON object"),
    (b"\xff\xfe", "$", "not UTF-8"),
    (b'{"schema_version": 2}', "$.schema_version", "accepts schema version 1, got 2"),
    (json.dumps(make_results()).replace('"mean": 30.0', '"mean": NaN').encode(), "$", "NaN is not valid JSON"),
    (json.dumps(make_results(version="0.9.0")).encode(), "$.tokbench.version", "tokbench 0.9.0 is not accepted"),
    (json.dumps(make_results(version="banana")).encode(), "$.tokbench.version", "not a version number"),
    (json.dumps(make_results(psnr=120.0)).encode(), "$.tasks.reconstruction.metrics.psnr", "must lie in [0.0, 100.0]"),
])
def test_refusals_name_field_and_reason(body, field, reason):
    with pytest.raises(Refused) as err:
        check_submission(body, default_accepted_versions(), KNOWN)
    assert err.value.status == 422
    assert any(p.field == field and reason in p.reason for p in err.value.problems), err.value.problems


def test_accepted_versions_are_configurable():
    body = json.dumps(make_results(version="0.9.0")).encode()
    assert check_submission(body, SpecifierSet(">=0.1,<1"), KNOWN).status == "verified"


def test_queries_filter_and_sort(store, token):
    a = submit(store, make_results(name="a", family="vq", psnr=25.0, cer=0.30, tokens=256, bits=3584))
    b = submit(store, make_results(name="b", family="vq", psnr=31.0, cer=0.10, tokens=1024, bits=14336))
    c = submit(store, make_results(name="c", family="jpeg", psnr=28.0, cer=0.20, tokens=None, bits=40000))

    def ids(**kw):
        return [e.id for e in store.list(EntryQuery(**kw))]

    assert ids(task="reconstruction") == [b, c, a]  # psnr: higher first
    assert ids(task="text") == [b, c, a]  # cer_gt: lower first
    assert ids(task="reconstruction", sort="psnr", order="asc") == [a, c, b]
    assert ids(task="text", sort="word_acc_all") == [a, b, c]  # equal values: by id
    assert ids(sort="tokens_per_image") == [a, b, c]  # missing last
    assert ids(sort="tokenizer", order="desc") == [c, b, a]
    assert ids(family=["jpeg"]) == [c]
    assert ids(family=["vq", "jpeg"]) == [a, b, c]
    assert ids(max_tokens=512) == [a]
    assert ids(min_tokens=300) == [b]
    assert ids(max_bits=20000) == [a, b]
    assert ids(q="b") == [b]
    assert ids(q="%") == [] and ids(q="_") == []  # LIKE wildcards are literal
    assert ids(task="generation") == []
    assert ids(limit=2, offset=1) == [b, c]
    assert store.tasks() == ["reconstruction", "text"] and store.families() == ["jpeg", "vq"]


@pytest.mark.parametrize("params, field", [
    ({"sort": "psnr; DROP TABLE submissions"}, "sort"), ({"sort": "psnr"}, "sort"), ({"order": "up"}, "order"),
    ({"status": "x' OR '1'='1"}, "status"), ({"kind": "1=1"}, "kind"), ({"task": "t' --"}, "task"),
    ({"limit": 0}, "limit"), ({"offset": -1}, "offset"),
])
def test_bad_query_values_are_refused(store, params, field):
    with pytest.raises(Refused) as err:
        store.list(EntryQuery(**params))
    assert err.value.status == 422 and err.value.problems[0].field == field


def test_sql_looking_filters_match_nothing_and_change_nothing(store, token):
    submit(store, make_results())
    for value in ["' OR '1'='1", "jpeg'; DROP TABLE submissions; --", "\" OR 1=1 --", "%' OR family LIKE '%"]:
        assert store.list(EntryQuery(family=[value])) == []
        assert store.list(EntryQuery(q=value)) == []
    assert store.count() == 1 and len(store.list(EntryQuery())) == 1


def test_rate_limiter_sliding_window():
    now = [0.0]
    limiter = RateLimiter(2, 10.0, clock=lambda: now[0])
    assert limiter.acquire("t") is None and limiter.acquire("t") is None
    assert limiter.acquire("t") == pytest.approx(10.0)
    assert limiter.acquire("other") is None
    now[0] = 10.5
    assert limiter.acquire("t") is None
    assert parse_rate("30/60") == (30, 60.0) and parse_rate("5/min") == (5, 60.0)
    with pytest.raises(ValueError, match="--rate-limit"):
        parse_rate("lots")


def test_pareto_front():
    pts = [Point(1, "a", "f", 100, 30.0), Point(2, "b", "f", 200, 29.0), Point(3, "c", "f", 300, 35.0),
           Point(4, "d", "f", 100, 28.0), Point(5, "e", "f", 50, 20.0)]
    assert [p.entry_id for p in pareto_front(pts, higher_is_better=True)] == [5, 1, 3]
    assert [p.entry_id for p in pareto_front(pts, higher_is_better=False)] == [5]


def test_postgresql_urls_use_psycopg():
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'psycopg[binary]')")
    from tokbench.leaderboard.store import engine_for

    engine = engine_for("postgresql://board:secret@db.example:5432/leaderboard")
    assert (engine.dialect.name, engine.dialect.driver) == ("postgresql", "psycopg")
    assert engine.url.database == "leaderboard"
    engine.dispose()


@contextlib.contextmanager
def postgres_server():
    """A throw-away PostgreSQL server on a free loopback port: its URL (skips where PostgreSQL is not installed)."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'psycopg[binary]')")
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (Debian: apt-get install postgresql)")
    with throwaway_postgres(bindir) as url:
        yield url


@pytest.fixture
def postgres_url():
    """A throw-away PostgreSQL server for one test (see :func:`postgres_server`)."""
    with postgres_server() as url:
        yield url


def test_store_on_postgresql(postgres_url):
    store = Store(postgres_url)
    try:
        assert store.revision == "0002"
        token = store.create_token("alice")
        a = submit(store, make_results(name="a", psnr=25.0, checkpoint="1" * 64), store.authenticate(token)[0])
        b = submit(store, make_results(name="b", psnr=31.0), store.authenticate(token)[0])
        with pytest.raises(Refused, match=f"duplicate of entry {a}"):
            submit(store, make_results(name="a2", checkpoint="1" * 64), store.authenticate(token)[0])
        assert [e.id for e in store.list(EntryQuery(task="reconstruction"))] == [b, a]
        assert store.list(EntryQuery(family=["' OR '1'='1"])) == []
        assert json.loads(store.results(a))["tokenizer"]["name"] == "a"
        store.revoke_token("alice")
        with pytest.raises(PermissionError):
            store.authenticate(token)
    finally:
        store.close()
    assert Store(postgres_url).count() == 2  # reopening: already migrated
