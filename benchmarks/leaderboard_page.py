"""Time the leaderboard page (GET /) and the entry listing (GET /api/entries) against the number of entries.

    python benchmarks/leaderboard_page.py [--entries 100,400,1000] [--repeats 5]

Entries are valid results files (two tasks, four metrics) stored through the same
validation as a submission, in a temporary SQLite database; requests go through the ASGI
app in-process (Starlette's test client), so the figure is the server's own work without
network. Prints the median of ``--repeats`` requests after one warm-up.
"""
from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_results_schema import FINGERPRINTS, make_results  # noqa: E402

from tokbench.leaderboard.app import Settings, asgi_app  # noqa: E402
from tokbench.leaderboard.store import Store  # noqa: E402
from tokbench.leaderboard.validation import KnownSuite, check_submission, default_accepted_versions  # noqa: E402


def median_seconds(client: TestClient, path: str, repeats: int) -> float:
    client.get(path)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        assert client.get(path).status_code == 200
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", default="100,400,1000")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    known = {k: KnownSuite(v) for k, v in FINGERPRINTS.items()}
    print("| entries | GET / (s) | GET /api/entries?task=reconstruction (s) |\n|---:|---:|---:|")
    for count in (int(n) for n in args.entries.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(f"sqlite:///{tmp}/lb.db")
            token_id = store.authenticate(store.create_token("bench"))[0]
            for i in range(count):
                results = make_results(name=f"tok-{i}-{secrets.token_hex(2)}", psnr=20 + (i % 97) / 10,
                                       cer=0.01 + (i % 13) / 100, bits=1000.0 + 37 * i)
                store.add(check_submission(json.dumps(results).encode(), default_accepted_versions(), known), token_id)
            with TestClient(asgi_app(store, Settings(known_suites=known))) as client:
                page = median_seconds(client, "/", args.repeats)
                api = median_seconds(client, "/api/entries?task=reconstruction&limit=1000", args.repeats)
            store.close()
        print(f"| {count} | {page:.3f} | {api:.3f} |")


if __name__ == "__main__":
    main()
