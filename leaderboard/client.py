"""Talking to a leaderboard server over HTTP: submitting results, reading entries."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tokbench.leaderboard.cli import terminal_safe
from tokbench.leaderboard.store import Entry

PAGE = 1000


class SubmissionRefused(RuntimeError):
    """The server refused a submission; the message says why (HTTP status, fields and reasons)."""

    def __init__(self, status: int, message: str, body: dict[str, Any] | None = None):
        self.status, self.body = status, body or {}
        super().__init__(message)


def _explain(response: httpx.Response, base_url: str) -> str:
    try:
        body = response.json()
    except ValueError:
        body = {}
    problems = body.get("errors") or []
    details = "; ".join(f"{p.get('field')}: {p.get('reason')}" for p in problems) or body.get("error") or response.text[:300]
    status = response.status_code
    hint = {401: " (check --token or $TOKBENCH_TOKEN)", 403: " (ask the leaderboard's operator for a new token)",
            413: "", 429: f" (retry after {response.headers.get('retry-after', '?')} s)"}.get(status, "")
    message = f"submission refused (HTTP {status}): {details}{hint}"
    existing = body.get("existing")
    if existing:
        message += f"; existing entry: {base_url.rstrip('/')}{existing['url']}"
    # The reasons echo submitted strings (names): never let them drive the user's terminal.
    return terminal_safe(message)


class LeaderboardClient:
    """A client of one leaderboard server (``base_url`` such as ``http://127.0.0.1:8080``)."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60.0):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"--server must be an http:// or https:// URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> "LeaderboardClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, url, **kwargs)
        except httpx.HTTPError as err:
            raise RuntimeError(f"cannot reach the leaderboard at {self.base_url}: {err}") from err

    def submit_bytes(self, body: bytes) -> dict[str, Any]:
        """Submit a results file's bytes; the server's answer (id, status, url), or :class:`SubmissionRefused`."""
        response = self._request("POST", "/api/submissions", content=body,
                                 headers={"content-type": "application/json"})
        if response.status_code != 201:
            try:
                body_json = response.json()
            except ValueError:
                body_json = None
            raise SubmissionRefused(response.status_code, _explain(response, self.base_url), body_json)
        return response.json()

    def submit(self, path: str | Path) -> dict[str, Any]:
        """Submit the results file at ``path`` (sent verbatim)."""
        try:
            body = Path(path).read_bytes()
        except OSError as err:
            raise ValueError(f"cannot read {path}: {err.strerror}") from err
        return self.submit_bytes(body)

    def _get_json(self, url: str, **params: Any) -> Any:
        response = self._request("GET", url, params=params)
        if response.status_code != 200:
            raise RuntimeError(f"GET {self.base_url}{url} failed (HTTP {response.status_code}): "
                               f"{_explain(response, self.base_url).split(': ', 1)[-1]}")
        return response.json()

    def entries(self, **params: Any) -> list[Entry]:
        """Every entry matching the API's filter parameters (all pages)."""
        params = {k: v for k, v in params.items() if v is not None}
        out: list[Entry] = []
        while True:
            page = self._get_json("/api/entries", **params, limit=PAGE, offset=len(out))["entries"]
            out.extend(Entry.from_dict(e) for e in page)
            if len(page) < PAGE:
                return out

    def results_text(self, entry_id: int) -> str:
        """The submitted ``results.json`` of an entry, verbatim."""
        response = self._request("GET", f"/api/entries/{entry_id}/results.json")
        if response.status_code != 200:
            raise RuntimeError(f"entry {entry_id}: HTTP {response.status_code}")
        return response.text
