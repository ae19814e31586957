"""Concurrency and crash figures of the leaderboard server, against a live server on 127.0.0.1.

For each backend (SQLite always; PostgreSQL where its server binaries and psycopg are installed):

1. 20, then 50 distinct submissions sent at once (one thread each, released together):
   every one must get 201 with its own id, and the listing must then hold all of them
   with all their metric rows.
2. ``kill -9`` of the server while 8 threads keep submitting: after the restart every
   acknowledged (201) submission is there with the id it was given, nothing is half-stored
   (each entry has all its metric rows and its results file), and the server accepts more.

Prints a Markdown table (the one in BENCHMARKS.md) and the machine it ran on.

    python benchmarks/leaderboard_concurrency.py [--backends sqlite,postgresql]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pg_server import postgres_bin, throwaway_postgres  # noqa: E402

from tokbench.leaderboard.store import Store  # noqa: E402
from tokbench.version import __version__  # noqa: E402

FINGERPRINTS = {"photos": "a" * 64, "text": "b" * 64}
METRICS_PER_ENTRY = 4


def make_results(name: str) -> dict:
    """A valid, distinct results file (a fresh checkpoint hash) with 2 tasks and 4 metrics."""
    def metric(mean: float, half: float, n: int, higher: bool) -> dict:
        return {"mean": mean, "ci95": [mean - half, mean + half], "n": n, "higher_is_better": higher}

    return {
        "schema_version": 1, "tokbench": {"version": __version__, "git_commit": None},
        "created": "2025-01-02T03:04:05+00:00",
        "tokenizer": {"name": name, "family": "jpeg", "kind": "discrete", "config": {"q": 50},
                      "checkpoint_sha256": secrets.token_hex(32), "parameters": 1234, "tokens_per_image": None,
                      "bits_per_image": 40000.0},
        "datasets": [{"name": "photos", "source": "builtin", "version": "1", "fingerprint": FINGERPRINTS["photos"],
                      "num_images": 8, "resolution": "256"},
                     {"name": "text", "source": "builtin", "version": "1", "fingerprint": FINGERPRINTS["text"],
                      "num_images": 8, "resolution": "native"}],
        "tasks": {
            "reconstruction": {"dataset": "photos", "num_images": 8, "num_skipped": 0, "skipped": [],
                               "metrics": {"psnr": metric(30.0, 1.0, 8, True), "ssim": metric(0.8, 0.05, 8, True)},
                               "skipped_metrics": {}, "extra": {}},
            "text": {"dataset": "text", "num_images": 8, "num_skipped": 0, "skipped": [],
                     "metrics": {"cer_gt": metric(0.1, 0.05, 8, False), "word_acc_all": metric(0.7, 0.1, 8, True)},
                     "skipped_metrics": {}, "extra": {}},
        },
        "hardware": {"device": "cpu", "gpu": None, "cpu_count": 2, "torch": "2.4.0", "platform": "Linux"},
        "timings": {"total_s": 12.5, "tasks_s": {"reconstruction": 5.0, "text": 7.5}},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL server on a free loopback port (the tests' own, tests/pg_server.py)."""
    with throwaway_postgres(postgres_bin()) as url:
        yield url


def postgres_available() -> bool:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return bool(list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or shutil.which("initdb"))


class Server:
    """``tokbench leaderboard serve`` in a child process."""

    def __init__(self, db: str, workdir: Path, known: Path):
        self.db, self.workdir, self.known = db, workdir, known
        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen | None = None

    def start(self, http: httpx.Client, timeout: float = 120) -> "Server":
        port = self.url.rsplit(":", 1)[1]
        log = open(self.workdir / f"server-{port}.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "tokbench", "leaderboard", "serve", "--db", self.db,
                                      "--port", port, "--known-suites", str(self.known), "--rate-limit", "100000/60",
                                      "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(self.workdir / f'server-{port}.log').read_text()}")
            try:
                if http.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


def listing(http: httpx.Client, url: str) -> dict[str, dict]:
    entries, offset = [], 0
    while True:
        page = http.get(f"{url}/api/entries", params={"status": "all", "limit": 1000, "offset": offset}).json()["entries"]
        entries += page
        offset += len(page)
        if len(page) < 1000:
            return {e["tokenizer"]: e for e in entries}


def burst(http: httpx.Client, url: str, token: str, n: int, tag: str) -> dict:
    """``n`` distinct submissions released at once; checks all are acknowledged and stored whole."""
    bodies = [json.dumps(make_results(f"{tag}-{i}")) for i in range(n)]
    gate = threading.Barrier(n)
    latencies: list[float] = []

    def send(body: str) -> httpx.Response:
        gate.wait()
        start = time.perf_counter()
        r = http.post(f"{url}/api/submissions", content=body, headers={"authorization": f"Bearer {token}"}, timeout=120)
        latencies.append(time.perf_counter() - start)
        return r

    start = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(send, bodies))
    wall = time.perf_counter() - start
    ok = [a for a in answers if a.status_code == 201]
    stored = {k: v for k, v in listing(http, url).items() if k.startswith(f"{tag}-")}
    whole = sum(sum(len(m) for m in e["metrics"].values()) == METRICS_PER_ENTRY for e in stored.values())
    return {"sent": n, "acknowledged": len(ok), "distinct_ids": len({a.json()["id"] for a in ok}), "stored": len(stored),
            "stored_whole": whole, "lost": len({a.json()["id"] for a in ok} - {e["id"] for e in stored.values()}),
            "wall_s": wall, "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * sorted(latencies)[max(0, int(0.95 * len(latencies)) - 1)], "max_ms": 1000 * max(latencies)}


def kill_test(http: httpx.Client, server: Server, token: str, sqlite_file: Path | None,
              total: int = 300, kill_after: int = 30, threads: int = 8) -> dict:
    """Submissions from ``threads`` threads; SIGKILL after ``kill_after`` acknowledgements; restart; compare."""
    acknowledged: dict[str, int] = {}
    lock, killed = threading.Lock(), threading.Event()
    failed = [0]

    def submit(i: int) -> None:
        name = f"kill-{i}"
        if killed.is_set():
            return
        try:
            r = http.post(f"{server.url}/api/submissions", content=json.dumps(make_results(name)),
                          headers={"authorization": f"Bearer {token}"}, timeout=30)
        except httpx.HTTPError:
            with lock:
                failed[0] += 1  # in flight when the server died: may or may not be stored
            return
        if r.status_code == 201:
            with lock:
                acknowledged[name] = r.json()["id"]
                if len(acknowledged) >= kill_after and not killed.is_set():
                    killed.set()
                    os.kill(server.proc.pid, signal.SIGKILL)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(submit, range(total)))
    server.proc.wait(30)
    integrity = "n/a"
    if sqlite_file is not None:
        with sqlite3.connect(sqlite_file) as raw:
            integrity = raw.execute("PRAGMA integrity_check").fetchone()[0]
    restarted = Server(server.db, server.workdir, server.known)
    start = time.perf_counter()
    restarted.start(http)
    restart_s = time.perf_counter() - start
    try:
        stored = {k: v for k, v in listing(http, restarted.url).items() if k.startswith("kill-")}
        lost = [n for n, i in acknowledged.items() if stored.get(n, {}).get("id") != i]
        half = [n for n, e in stored.items() if sum(len(m) for m in e["metrics"].values()) != METRICS_PER_ENTRY
                or http.get(f"{restarted.url}/api/entries/{e['id']}/results.json").status_code != 200]
        after = http.post(f"{restarted.url}/api/submissions", content=json.dumps(make_results("after-restart")),
                          headers={"authorization": f"Bearer {token}"}).status_code
    finally:
        restarted.stop()
    return {"killed_by": f"SIGKILL (exit {server.proc.returncode})", "acknowledged": len(acknowledged),
            "in_flight_errors": failed[0], "stored_after_restart": len(stored), "lost": len(lost),
            "half_stored": len(half), "integrity": integrity, "restart_s": restart_s, "accepts_after_restart": after}


def run_backend(name: str, url: str, workdir: Path, sqlite_file: Path | None) -> list[dict]:
    store = Store(url)
    token = store.create_token("bench")
    store.close()
    known = workdir / "known.json"
    known.write_text(json.dumps(FINGERPRINTS))
    rows = []
    with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=100)) as http:
        server = Server(url, workdir, known).start(http)
        try:
            for n in (20, 50):
                rows.append({"backend": name, "test": f"{n} concurrent", **burst(http, server.url, token, n, f"burst{n}")})
            rows.append({"backend": name, "test": "kill -9 mid-submission", **kill_test(http, server, token, sqlite_file)})
        finally:
            server.stop()
    return rows


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        cpu = model
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} CPUs visible, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"{platform.system()} {platform.release()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql" if postgres_available() else "sqlite")
    parser.add_argument("--json", help="also write the raw figures to this file")
    args = parser.parse_args()
    rows = []
    for backend in args.backends.split(","):
        work = Path(tempfile.mkdtemp(prefix=f"tokbench-lb-bench-{backend}-"))
        try:
            if backend == "sqlite":
                rows += run_backend("SQLite", f"sqlite:///{work / 'lb.db'}", work, work / "lb.db")
            elif backend == "postgresql":
                with postgres() as url:
                    found = re.search(r"\d+\.\d+", subprocess.run(["psql", "--version"], capture_output=True,
                                                                  text=True).stdout)
                    rows += run_backend(f"PostgreSQL {found.group() if found else ''}".strip(), url, work, None)
            else:
                raise SystemExit(f"unknown backend {backend!r}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"machine: {machine()}\n")
    print("| backend | concurrent submissions | acknowledged (201), distinct ids | stored whole | lost | wall s "
          "| latency p50 / p95 / max ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "sent" in r:
            print(f"| {r['backend']} | {r['sent']} | {r['acknowledged']}, {r['distinct_ids']} | {r['stored_whole']} "
                  f"| {r['lost']} | {r['wall_s']:.2f} | {r['p50_ms']:.0f} / {r['p95_ms']:.0f} / {r['max_ms']:.0f} |")
    print("\n| backend | kill -9 mid-submission (8 threads) | acknowledged before the kill | cut off in flight "
          "| stored after restart | acknowledged but lost | half-stored | integrity | restart s | next submission |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "sent" not in r:
            print(f"| {r['backend']} | {r['killed_by']} | {r['acknowledged']} | {r['in_flight_errors']} "
                  f"| {r['stored_after_restart']} | {r['lost']} | {r['half_stored']} | {r['integrity']} "
                  f"| {r['restart_s']:.1f} | HTTP {r['accepts_after_restart']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    failed = [r for r in rows if r.get("lost") or r.get("half_stored") or r.get("acknowledged") != r.get("sent", r.get(
        "acknowledged"))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
