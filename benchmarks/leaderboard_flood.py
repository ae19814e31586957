"""The invented-names flood of issue #23 (item 2), measured against a live server.

    python benchmarks/leaderboard_flood.py [--entries 100] [--flood 9] [--tasks 8000] [--metrics 30000]

Stores ``--entries`` valid results, times ``GET /`` (median of 5), then posts ``--flood``
submissions with ``--tasks`` invented task names each and one with ``--metrics`` invented
metric names, printing each answer's status, size and time, and the ``/api/health`` latency
measured while the large submission is being validated. Then times ``GET /`` again: refused
floods must leave it where it was (the issue's bound: within 2x of the clean time).
Server: uvicorn on loopback in this process (SQLite in a temporary folder).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_leaderboard_api import ThreadedServer  # noqa: E402
from test_results_schema import FINGERPRINTS, make_results  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from leaderboard_page import median_seconds  # noqa: E402  (the same median of warm GETs)

from tokbench.leaderboard.app import Settings, asgi_app  # noqa: E402
from tokbench.leaderboard.store import Store  # noqa: E402
from tokbench.leaderboard.validation import KnownSuite, check_submission, default_accepted_versions  # noqa: E402


def flood_body(tasks: int = 0, metrics: int = 0) -> bytes:
    results = make_results()
    for i in range(tasks):
        results["tasks"][f"invented-task-{i}"] = results["tasks"]["text"]
    ssim = results["tasks"]["reconstruction"]["metrics"]["ssim"]
    results["tasks"]["reconstruction"]["metrics"].update({f"invented-metric-{i}": ssim for i in range(metrics)})
    return json.dumps(results).encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=100)
    ap.add_argument("--flood", type=int, default=9)
    ap.add_argument("--tasks", type=int, default=8000)
    ap.add_argument("--metrics", type=int, default=30_000)
    args = ap.parse_args()
    known = {k: KnownSuite(v) for k, v in FINGERPRINTS.items()}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/lb.db")
        token = store.create_token("bench")
        token_id = store.authenticate(token)[0]
        for i in range(args.entries):
            results = make_results(name=f"tok-{i}", psnr=20 + (i % 97) / 10, bits=1000.0 + 37 * i)
            store.add(check_submission(json.dumps(results).encode(), default_accepted_versions(), known), token_id)
        settings = Settings(known_suites=known, max_body_bytes=64 * 1024 * 1024, rate_limit=(10_000, 60.0))
        auth = {"authorization": f"Bearer {token}"}
        with ThreadedServer(asgi_app(store, settings)) as server, httpx.Client(timeout=600) as http:
            clean = median_seconds(http, f"{server.url}/", 5)
            print(f"{args.entries} entries: GET / {clean:.3f} s (clean)")
            body = flood_body(tasks=args.tasks)
            for i in range(args.flood):
                t0 = time.perf_counter()
                answer = http.post(f"{server.url}/api/submissions", content=body, headers=auth)
                print(f"  flood {i + 1}: {len(body) / 1e6:.1f} MB, {args.tasks:,} invented tasks -> {answer.status_code}, "
                      f"{len(answer.content):,} B answer, {time.perf_counter() - t0:.3f} s")
            body, answer = flood_body(metrics=args.metrics), {}
            poster = threading.Thread(target=lambda: answer.update(
                r=http.post(f"{server.url}/api/submissions", content=body, headers=auth)))
            t0 = time.perf_counter()
            poster.start()
            health = []
            with httpx.Client(timeout=600) as probe:
                while poster.is_alive():
                    t1 = time.perf_counter()
                    probe.get(f"{server.url}/api/health")
                    health.append(time.perf_counter() - t1)
                    time.sleep(0.01)
            poster.join()
            print(f"  {args.metrics:,} invented metrics ({len(body) / 1e6:.1f} MB) -> {answer['r'].status_code}, "
                  f"{len(answer['r'].content):,} B answer, {time.perf_counter() - t0:.3f} s; "
                  f"/api/health meanwhile: {len(health)} answers, slowest {max(health, default=0):.3f} s")
            after = median_seconds(http, f"{server.url}/", 5)
            print(f"after the floods: GET / {after:.3f} s ({after / clean:.2f}x the clean time)")
        store.close()


if __name__ == "__main__":
    main()
