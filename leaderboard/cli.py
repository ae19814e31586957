"""Commands ``tokbench submit`` and ``tokbench leaderboard serve|token|show|export``.

Heavy imports (FastAPI, SQLAlchemy, pandas) happen inside the commands, so that building the
``tokbench`` parser stays fast.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from pathlib import Path

DB_ENV, TOKEN_ENV, SERVER_ENV = "TOKBENCH_LEADERBOARD_DB", "TOKBENCH_TOKEN", "TOKBENCH_SERVER"
DEFAULT_DB = "sqlite:///leaderboard.db"
# C0 and C1 control characters (ESC starts ANSI sequences), DEL, and the bidirectional
# overrides and isolates that reorder what a terminal shows.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every control character replaced by U+FFFD, so that submitted names can
    never move the cursor, clear the screen or recolour a terminal. ``keep_newlines`` keeps
    line breaks (of our own output, not of submitted strings)."""
    if keep_newlines:
        return "\n".join(_CONTROL.sub("\ufffd", line) for line in text.split("\n"))
    return _CONTROL.sub("\ufffd", text)


def _safe_entry(entry):  # noqa: ANN001, ANN202
    """An entry whose strings (names, task and metric keys, suites) are :func:`terminal_safe`."""
    metrics = {terminal_safe(task): {terminal_safe(m): v for m, v in block.items()}
               for task, block in entry.metrics.items()}
    strings = {f.name: terminal_safe(getattr(entry, f.name)) for f in dataclasses.fields(entry)
               if isinstance(getattr(entry, f.name), str)}
    settings = {terminal_safe(task): {k: terminal_safe(v) if isinstance(v, str) else v for k, v in setting.items()}
                for task, setting in entry.settings.items()}
    return dataclasses.replace(entry, **strings, metrics=metrics, settings=settings)


def _db_url(args: argparse.Namespace) -> str:
    return args.db or os.environ.get(DB_ENV) or DEFAULT_DB


def _open_store(args: argparse.Namespace, must_exist: bool = False):  # noqa: ANN202
    from sqlalchemy.engine import make_url

    from tokbench.leaderboard.store import Store

    url = _db_url(args)
    if must_exist and url.startswith("sqlite"):
        path = make_url(url).database
        if not path or not Path(path).is_file():
            raise ValueError(f"no leaderboard database at {path} (give --db URL, --server URL, or set ${DB_ENV})")
    return Store(url)


def run_serve(args: argparse.Namespace) -> int:
    """Start the web server (blocks until interrupted)."""
    import uvicorn

    from tokbench.leaderboard.app import Settings, asgi_app
    from tokbench.leaderboard.limits import parse_rate
    from tokbench.leaderboard.validation import default_accepted_versions, load_known_suites, parse_specifier

    store = _open_store(args)
    if not args.known_suites:
        print("computing the fingerprints of the built-in suites (pass --known-suites FILE to skip this)...", flush=True)
    suites = load_known_suites(args.known_suites)
    settings = Settings(accepted_versions=parse_specifier(args.accept_versions) if args.accept_versions
                        else default_accepted_versions(),
                        known_suites=suites, max_body_bytes=args.max_body_bytes, rate_limit=parse_rate(args.rate_limit))
    print(f"tokbench leaderboard: database {store.engine.url.render_as_string()} (schema {store.revision}), "
          f"{len(suites)} known suites ({', '.join(sorted(suites)) or 'none'}), accepting tokbench "
          f"{settings.accepted_versions or 'any version'}", flush=True)
    print(f"serving on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(asgi_app(store, settings), host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=5)
    store.close()
    return 0


def run_token(args: argparse.Namespace) -> int:
    """Create, revoke or list API tokens (on the server's database)."""
    store = _open_store(args, must_exist=args.action != "create")
    try:
        if args.action == "create":
            if not args.name:
                raise ValueError("token create needs a NAME")
            token = store.create_token(args.name)
            print(token)
            print(f"token {args.name!r} created; it is shown only this once (the database keeps its hash)",
                  file=sys.stderr)
        elif args.action == "revoke":
            if not args.name:
                raise ValueError("token revoke needs a NAME")
            store.revoke_token(args.name)
            print(f"token {args.name!r} revoked")
        else:
            import pandas as pd

            rows = [{**vars(t), "name": terminal_safe(t.name)} for t in store.list_tokens()]
            print(pd.DataFrame(rows).to_string(index=False) if rows else "(no tokens)")
    finally:
        store.close()
    return 0


def _load_entries(args: argparse.Namespace, status: str):  # noqa: ANN202
    """Entries (and a way to get each results file) from ``--server`` or the database."""
    from tokbench.leaderboard.query import EntryQuery

    server = args.server or (os.environ.get(SERVER_ENV) if not args.db else None)
    if server:
        from tokbench.leaderboard.client import LeaderboardClient

        client = LeaderboardClient(server)
        entries = client.entries(task=getattr(args, "task", None), family=getattr(args, "family", None),
                                 status=status, sort=getattr(args, "sort", None), order=getattr(args, "order", None))
        return entries, client.results_text, client.close
    store = _open_store(args, must_exist=True)
    query = EntryQuery(task=getattr(args, "task", None),
                       family=[args.family] if getattr(args, "family", None) else [], status=status,
                       sort=getattr(args, "sort", None), order=getattr(args, "order", None), limit=1000)
    entries, offset = [], 0
    while True:
        query.offset = offset
        page = store.list(query)
        entries += page
        offset += len(page)
        if len(page) < query.limit:
            break
    return entries, store.results, store.close


def run_show(args: argparse.Namespace) -> int:
    """Print the leaderboard as a table, Markdown, CSV or HTML."""
    entries, _, close = _load_entries(args, args.status)
    close()
    from tokbench.leaderboard.table import format_table, format_tokbench  # pandas: only once there is a table

    safe = [_safe_entry(e) for e in entries]
    # Sanitized before formatting, so that columns stay aligned.
    text = format_tokbench(safe, args.format) if args.view == "tokbench" else format_table(safe, args.format, args.task)
    print(terminal_safe(text.rstrip("\n"), keep_newlines=True))
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Write the static site."""
    from tokbench.leaderboard.export import export_site

    entries, results_text, close = _load_entries(args, "all")
    try:
        texts = {e.id: results_text(e.id) for e in entries}
    finally:
        close()
    written = export_site(entries, texts, args.out)
    print(f"wrote {len(entries)} entries, {len(written)} files to {args.out} (open {Path(args.out) / 'index.html'})")
    return 0


def run_submit(args: argparse.Namespace) -> int:
    """Submit a results file to a leaderboard server."""
    from tokbench.leaderboard.client import LeaderboardClient

    server = args.server or os.environ.get(SERVER_ENV)
    token = args.token or os.environ.get(TOKEN_ENV)
    if not server:
        raise ValueError(f"give the leaderboard with --server URL (or set ${SERVER_ENV})")
    if not token:
        raise ValueError(f"give an API token with --token or ${TOKEN_ENV}")
    path = Path(args.results)
    if path.is_dir():
        path = path / "results.json"
    with LeaderboardClient(server, token) as client:
        answer = client.submit(path)
    print(terminal_safe(f"accepted: entry {answer['id']} ({answer['status']}) at {server.rstrip('/')}{answer['url']}"))
    for reason in answer.get("reasons", []):
        print(terminal_safe(f"  unverified because {reason['field']}: {reason['reason']}"))
    return 0


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help=f"database URL (sqlite:///FILE or postgresql://...; default ${DB_ENV} or {DEFAULT_DB})")
    p.add_argument("--server", help=f"read from a leaderboard server instead (http://HOST:PORT; or ${SERVER_ENV})")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``submit`` and ``leaderboard`` (``serve``, ``token``, ``show``, ``export``)."""
    p = subparsers.add_parser("submit", help="submit a results.json to a leaderboard server")
    p.add_argument("results", help="results.json (or the eval output folder holding it)")
    p.add_argument("--server", help=f"leaderboard URL, e.g. http://127.0.0.1:8080 (or ${SERVER_ENV})")
    p.add_argument("--token", help=f"API token (or ${TOKEN_ENV})")
    p.set_defaults(func=run_submit)

    lb = subparsers.add_parser("leaderboard", help="run, administer, show or export a results leaderboard")
    sub = lb.add_subparsers(dest="leaderboard_command", metavar="ACTION", required=True)

    p = sub.add_parser("serve", help="start the leaderboard web server")
    p.add_argument("--db", help=f"database URL (default ${DB_ENV} or {DEFAULT_DB})")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--known-suites", help="JSON file: suite name -> fingerprint (default: this tokbench's built-in suites)")
    p.add_argument("--accept-versions", help="tokbench versions accepted, e.g. '>=0.1,<0.3' (default: this minor series)")
    p.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024, help="largest accepted request body")
    p.add_argument("--rate-limit", default="30/60", help="submissions per token: N/SECONDS (default 30/60)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run_serve)

    p = sub.add_parser("token", help="API tokens: create NAME | revoke NAME | list")
    p.add_argument("action", choices=["create", "revoke", "list"])
    p.add_argument("name", nargs="?")
    p.add_argument("--db", help=f"database URL (default ${DB_ENV} or {DEFAULT_DB})")
    p.set_defaults(func=run_token)

    p = sub.add_parser("show", help="print the leaderboard")
    _add_source(p)
    p.add_argument("--task", help="one task's metrics only (reconstruction, detail, text, ...)")
    p.add_argument("--family", help="only this tokenizer family")
    p.add_argument("--status", default="verified", choices=["verified", "unverified", "all"])
    p.add_argument("--sort", help="column or metric name (a metric needs --task)")
    p.add_argument("--order", choices=["asc", "desc"])
    p.add_argument("--format", default="table", choices=["table", "markdown", "csv", "html"])
    p.add_argument("--view", default="tasks", choices=["tasks", "tokbench"],
                   help="tasks: every task's metrics; tokbench: T-ACC / T-NED / F-Sim per size bucket (TokBench's table)")
    p.set_defaults(func=run_show)

    p = sub.add_parser("export", help="write the leaderboard as a static HTML site")
    _add_source(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run_export)
