"""Request limits: a body-size cap (413) as ASGI middleware, and a per-token submission rate limit (429)."""
from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413 before the app sees them.

    A declared ``Content-Length`` over the limit is refused at once; a chunked body is read up
    to the limit and refused as soon as it goes over. An accepted body is replayed to the app.
    """

    def __init__(self, app: Callable, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"error": f"request body too large (limit {self.max_bytes} bytes)",
                           "errors": [{"field": "body", "reason": f"larger than {self.max_bytes} bytes"}]}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                too_big = True
            if too_big:
                await self._refuse(send)
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class RateLimiter:
    """At most ``max_events`` per ``window_s`` seconds per key (sliding window, in memory, thread-safe)."""

    def __init__(self, max_events: int, window_s: float, clock: Callable[[], float] = time.monotonic):
        if max_events < 1 or window_s <= 0:
            raise ValueError("a rate limit needs at least 1 event per positive time window")
        self.max_events, self.window_s, self.clock = max_events, window_s, clock
        self._events: dict[Any, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def acquire(self, key: Any) -> float | None:
        """Record an event for ``key``; ``None`` if allowed, else the seconds to wait before retrying."""
        now = self.clock()
        with self._lock:
            events = self._events[key]
            while events and events[0] <= now - self.window_s:
                events.popleft()
            if len(events) >= self.max_events:
                return max(events[0] + self.window_s - now, 0.001)
            events.append(now)
            return None


def parse_rate(text: str) -> tuple[int, float]:
    """``"30/60"`` or ``"30/min"`` → (30 events, 60 seconds); units s, min, h."""
    try:
        count, _, window = text.partition("/")
        units = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "hour": 3600.0}
        seconds = units[window] if window in units else float(window)
        return int(count), seconds
    except (ValueError, KeyError):
        raise ValueError(f"--rate-limit: expected N/SECONDS or N/min, got {text!r}") from None
