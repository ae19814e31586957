"""Floods of invented names and large refusals (issue #23, item 2).

Unregistered task names are refused like unregistered metrics; counts are checked right after
parsing, before the document is walked; validation runs in a worker thread so the server keeps
answering; an error body lists at most `MAX_REPORTED_PROBLEMS` problems and the total.
"""
from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from starlette.testclient import TestClient
from test_leaderboard_api import ThreadedServer
from test_results_schema import FINGERPRINTS, make_results

import tokbench.leaderboard.app as app_module
from tokbench.leaderboard.app import Settings, asgi_app
from tokbench.leaderboard.store import Store
from tokbench.leaderboard.validation import (MAX_METRICS_PER_TASK, MAX_REPORTED_PROBLEMS, MAX_TASKS, KnownSuite,
                                             Refused, check_submission, default_accepted_versions)
from tokbench.results import validate_results

KNOWN = {k: KnownSuite(v) for k, v in FINGERPRINTS.items()}


def with_tasks(count: int, prefix: str = "invented") -> bytes:
    results = make_results()
    for i in range(count):
        results["tasks"][f"{prefix}{i}"] = results["tasks"]["text"]
    return json.dumps(results).encode()


def with_metrics(count: int) -> bytes:
    results = make_results()
    metrics = results["tasks"]["reconstruction"]["metrics"]
    for i in range(count):
        metrics[f"m{i}"] = metrics["ssim"]
    return json.dumps(results).encode()


def refusal(body: bytes) -> Refused:
    with pytest.raises(Refused) as caught:
        check_submission(body, default_accepted_versions(), KNOWN)
    return caught.value


def test_an_unregistered_task_name_is_refused_like_an_unregistered_metric():
    results = make_results()
    results["tasks"]["reconstructionn"] = results["tasks"]["reconstruction"]
    assert validate_results(results) == ["$.tasks.reconstructionn: unknown task 'reconstructionn' (not in the task "
                                         "registry; install the plug-in that declares it)"]
    err = refusal(json.dumps(results).encode())
    assert err.status == 422 and [p.field for p in err.problems] == ["$.tasks.reconstructionn"]


@pytest.mark.parametrize("body, reason", [
    (with_tasks(8000), f"8,002 tasks; expected at most {MAX_TASKS}"),
    (with_metrics(30_000), f"task 1 of 2 has 30,002 metrics; expected at most {MAX_METRICS_PER_TASK} per task"),
], ids=["8000 tasks", "30000 metrics"])
def test_floods_are_refused_by_their_counts_before_the_document_is_walked(body, reason, monkeypatch):
    walked = []
    monkeypatch.setattr("tokbench.leaderboard.validation.storable_problems", lambda obj: walked.append(1) or [])
    monkeypatch.setattr("tokbench.leaderboard.validation.validate_results", lambda obj: walked.append(1) or [])
    err = refusal(body)
    assert [p.reason for p in err.problems] == [reason]
    assert not walked


def test_refusals_list_the_first_problems_and_the_total(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'lb.db'}")
    token = store.create_token("mallory")
    with TestClient(asgi_app(store, Settings(known_suites=KNOWN))) as client:
        for body, total in [(with_tasks(MAX_TASKS - 2), MAX_TASKS - 2), (with_metrics(MAX_METRICS_PER_TASK - 2),
                                                                         MAX_METRICS_PER_TASK - 2)]:
            answer = client.post("/api/submissions", content=body, headers={"authorization": f"Bearer {token}"})
            assert answer.status_code == 422
            data = answer.json()
            assert len(data["errors"]) == MAX_REPORTED_PROBLEMS and data["errors_total"] == total
            assert data["error"].endswith(f"(and {total - 3:,} more problems)")
            assert len(answer.content) < 6_000
        assert client.get("/api/entries").json()["entries"] == []
    store.close()


def test_the_server_answers_while_a_submission_is_validated(tmp_path, monkeypatch):
    """A slow validation (here: held until released) must not stop /api/health from answering."""
    entered, release = threading.Event(), threading.Event()
    real = app_module.check_submission

    def held(*args):
        entered.set()
        release.wait(30)
        return real(*args)

    monkeypatch.setattr(app_module, "check_submission", held)
    store = Store(f"sqlite:///{tmp_path / 'lb.db'}")
    token = store.create_token("alice")
    with ThreadedServer(asgi_app(store, Settings(known_suites=KNOWN))) as server, httpx.Client(timeout=60) as http:
        answers = []
        submitting = threading.Thread(target=lambda: answers.append(http.post(
            f"{server.url}/api/submissions", content=json.dumps(make_results()).encode(),
            headers={"authorization": f"Bearer {token}"})))
        submitting.start()
        assert entered.wait(20)
        try:
            t0 = time.monotonic()
            assert httpx.get(f"{server.url}/api/health", timeout=5).status_code == 200
            assert time.monotonic() - t0 < 5
        finally:
            release.set()
            submitting.join(30)
        assert answers[0].status_code == 201
    store.close()
