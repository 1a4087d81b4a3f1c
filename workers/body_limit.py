"""A request body's size, bounded before anyone reads it: authentication needs the raw bytes,
so without a bound an unauthenticated sender could make the service buffer anything.

`BodyLimit` wraps the whole app (every endpoint that reads a body: alerts, Slack, approvals,
runs, safety). A `Content-Length` over the limit is answered 413 at once, the body unread; a
body without one (chunked) is counted as it streams in, and whoever reads past the limit gets
`BodyTooLarge`, an HTTPException that the app's handler answers as JSON 413. Either answer
says `Connection: close`, so the server drops the rest of the upload instead of draining it.
"""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workers.metrics import REJECTED

MAX_BODY_BYTES = 1 << 20
TOO_LARGE = "the body is larger than 1 MiB; send one alert batch or decision of at most 1 MiB"
CLOSE = {"Connection": "close"}


class BodyTooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(status_code=413, detail=TOO_LARGE, headers=CLOSE)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            # The HTTP server has already refused a malformed Content-Length.
            return int(value) if value.isdigit() else None
    return None


def _source(path: str) -> str:
    """The metric label for a refusal: the sender for a webhook, else "api" (never the
    path itself, which the caller chooses)."""
    if path.startswith("/alerts/"):
        source = path.removeprefix("/alerts/")
        return source if source in ("alertmanager", "grafana", "pagerduty", "generic") else "api"
    return "slack" if path == "/slack/interactions" else "api"


class BodyLimit:
    """Pure ASGI middleware (no buffering of its own, unlike BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            REJECTED.labels(_source(scope["path"]), "too_large").inc()
            refusal = JSONResponse({"error": TOO_LARGE}, status_code=413, headers=CLOSE)
            await refusal(scope, receive, send)
            return
        await self.app(scope, self._counting(receive, scope["path"]), send)

    def _counting(self, receive: Receive, path: str) -> Receive:
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    REJECTED.labels(_source(path), "too_large").inc()
                    raise BodyTooLarge()
            return message

        return counted
