"""The leaderboard web app (FastAPI): JSON API and HTML pages.

- ``POST /api/submissions`` — a ``results.json`` body, ``Authorization: Bearer <token>``;
  201 with the new entry, or 401/403 (token), 413 (size), 429 (rate), 422 (invalid, each
  field named), 409 (duplicate, with a pointer to the existing entry).
- ``GET /api/entries`` — filtered and sorted listing; ``GET /api/entries/{id}`` — one entry
  with its full results; ``GET /api/entries/{id}/results.json`` — the submitted file verbatim.
- ``GET /`` — the leaderboard page; ``GET /entries/{id}`` — one entry's page; ``GET /tokbench`` —
  the TokBench-form view (`tokbench.leaderboard.tokbench_view`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from packaging.specifiers import SpecifierSet
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from tokbench.leaderboard.limits import BodySizeLimit, RateLimiter
from tokbench.leaderboard.query import MAX_ENTRY_ID, EntryQuery
from tokbench.leaderboard.render import STATIC, SERVER_SITE, render_entry, render_index, render_tokbench
from tokbench.leaderboard.store import Store
from tokbench.leaderboard.validation import (MAX_REPORTED_PROBLEMS, KnownSuite, Problem, Refused, check_submission,
                                            default_accepted_versions)

DEFAULT_MAX_BODY = 4 * 1024 * 1024
SECURITY_HEADERS = {
    # Only our own script and styles; no inline script can run even if some markup slipped through.
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@dataclass
class Settings:
    """What the server accepts: versions, known suites, body size, submission rate per token."""

    accepted_versions: SpecifierSet = field(default_factory=default_accepted_versions)
    known_suites: dict[str, KnownSuite] = field(default_factory=dict)
    max_body_bytes: int = DEFAULT_MAX_BODY
    rate_limit: tuple[int, float] = (30, 60.0)


def _error(status: int, problems: list[Problem], summary: str | None = None, **extra: Any) -> JSONResponse:
    """An error body: the first `MAX_REPORTED_PROBLEMS` problems and, when there were more,
    ``errors_total`` (a refused 30,000-metric submission answered 4.7 MB before the cap)."""
    summary = summary or "; ".join(f"{p.field}: {p.reason}" for p in problems[:3])
    if len(problems) > MAX_REPORTED_PROBLEMS:
        summary += f" (and {len(problems) - 3:,} more problems)"
        extra["errors_total"] = len(problems)
    return JSONResponse({"error": summary, "errors": [p.as_dict() for p in problems[:MAX_REPORTED_PROBLEMS]], **extra},
                        status_code=status, headers={"www-authenticate": "Bearer"} if status == 401 else None)


def create_app(store: Store, settings: Settings | None = None) -> FastAPI:
    """The app over ``store``; wrap it with :class:`BodySizeLimit` through :func:`asgi_app` to serve."""
    settings = settings or Settings()
    limiter = RateLimiter(*settings.rate_limit)
    app = FastAPI(title="tokbench leaderboard", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    app.state.store, app.state.settings = store, settings
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next):  # noqa: ANN001, ANN202
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(Refused)
    async def refused(_request: Request, err: Refused) -> JSONResponse:
        extra = {}
        if err.existing_id is not None:
            extra["existing"] = {"id": err.existing_id, "url": f"/entries/{err.existing_id}",
                                 "api": f"/api/entries/{err.existing_id}"}
        return _error(err.status, err.problems, **extra)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, err: RequestValidationError) -> JSONResponse:
        problems = [Problem(".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]), e["msg"]) for e in err.errors()]
        return _error(422, problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, [Problem("path", str(err.detail))])

    @app.post("/api/submissions", status_code=201)
    async def submit(request: Request) -> JSONResponse:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _error(401, [Problem("authorization", "missing API token (send 'Authorization: Bearer <token>')")])
        try:
            who = await run_in_threadpool(store.authenticate, token.strip())
        except PermissionError as err:
            return _error(403, [Problem("authorization", str(err))])
        if who is None:
            return _error(401, [Problem("authorization", "unknown API token")])
        retry = limiter.acquire(who[0])
        if retry is not None:
            return JSONResponse({"error": f"rate limit: at most {settings.rate_limit[0]} submissions per "
                                          f"{settings.rate_limit[1]:g} s per token; retry in {retry:.0f} s",
                                 "errors": [{"field": "authorization", "reason": "too many submissions"}]},
                                status_code=429, headers={"retry-after": str(max(int(retry + 0.999), 1))})
        body = await request.body()
        # In a worker thread: validating a large body must not stall every other request.
        candidate = await run_in_threadpool(check_submission, body, settings.accepted_versions, settings.known_suites)
        entry_id = await run_in_threadpool(store.add, candidate, who[0])
        return JSONResponse({"id": entry_id, "status": candidate.status, "reasons": [r.as_dict() for r in candidate.reasons],
                             "url": f"/entries/{entry_id}", "api": f"/api/entries/{entry_id}"}, status_code=201,
                            headers={"location": f"/api/entries/{entry_id}"})

    def entry_query(task: str | None, family: list[str], kind: str | None, status: str, q: str | None,
                    min_tokens: float | None, max_tokens: float | None, min_bits: float | None,
                    max_bits: float | None, sort: str | None, order: str | None, limit: int, offset: int) -> EntryQuery:
        families = [f for value in family for f in value.split(",") if f]
        return EntryQuery(task=task, family=families, kind=kind, status=status, q=q, min_tokens=min_tokens,
                          max_tokens=max_tokens, min_bits=min_bits, max_bits=max_bits, sort=sort, order=order,
                          limit=limit, offset=offset).checked()

    @app.get("/api/entries")
    def list_entries(task: str | None = None, family: list[str] = Query(default=[]), kind: str | None = None,
                     status: str = "verified", q: str | None = None, min_tokens: float | None = None,
                     max_tokens: float | None = None, min_bits: float | None = None, max_bits: float | None = None,
                     sort: str | None = None, order: str | None = None, limit: int = 500, offset: int = 0) -> dict:
        query = entry_query(task, family, kind, status, q, min_tokens, max_tokens, min_bits, max_bits, sort, order,
                            limit, offset)
        entries = store.list(query)
        return {"count": len(entries), "sort": query.sort_key, "entries": [e.to_dict() for e in entries]}

    def _known_id(entry_id: int) -> int:
        # An id beyond the id column cannot exist; asking the database would overflow its integer type.
        if not 1 <= entry_id <= MAX_ENTRY_ID:
            raise StarletteHTTPException(404, f"no entry {entry_id} (entry ids run from 1 to {MAX_ENTRY_ID})")
        return entry_id

    def _entry_or_404(entry_id: int):  # noqa: ANN202
        entry = store.get(_known_id(entry_id))
        if entry is None:
            raise StarletteHTTPException(404, f"no entry {entry_id}")
        return entry

    @app.get("/api/entries/{entry_id}")
    def get_entry(entry_id: int) -> dict:
        entry = _entry_or_404(entry_id)
        return {**entry.to_dict(), "results": json.loads(store.results(entry_id))}

    @app.get("/api/entries/{entry_id}/results.json")
    def get_results(entry_id: int) -> Response:
        text = store.results(_known_id(entry_id))
        if text is None:
            raise StarletteHTTPException(404, f"no entry {entry_id}")
        return Response(text, media_type="application/json")

    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok", "entries": store.count(), "schema_revision": store.revision}

    @app.get("/", response_class=HTMLResponse)
    def index(family: str | None = None, max_tokens: float | None = None, max_bits: float | None = None) -> HTMLResponse:
        query = entry_query(None, [family] if family else [], None, "all", None, None, max_tokens, None, max_bits,
                            None, None, 1000, 0)
        filters = {"family": family, "max_tokens": max_tokens, "max_bits": max_bits}
        return HTMLResponse(render_index(store.list(query), SERVER_SITE, filters))

    @app.get("/tokbench", response_class=HTMLResponse)
    def tokbench_view(status: str = "all") -> HTMLResponse:
        """T-ACC / T-NED / F-Sim per size bucket, TokBench's table form. All statuses by default:
        runs on TokBench's own data come from ``--data`` folders, which are never verified."""
        query = entry_query(None, [], None, status, None, None, None, None, None, None, None, 1000, 0)
        return HTMLResponse(render_tokbench(store.list(query), SERVER_SITE))

    @app.get("/entries/{entry_id}", response_class=HTMLResponse)
    def entry_page(entry_id: int) -> HTMLResponse:
        entry = _entry_or_404(entry_id)
        return HTMLResponse(render_entry(entry, json.loads(store.results(entry_id)), SERVER_SITE))

    return app


def asgi_app(store: Store, settings: Settings | None = None) -> BodySizeLimit:
    """The app with its body-size limit in front: what the server runs."""
    settings = settings or Settings()
    return BodySizeLimit(create_app(store, settings), settings.max_body_bytes)
