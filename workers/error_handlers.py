"""How the service answers an error: always `{"error": "<one line saying what to fix>"}`.

- HTTPException (every deliberate refusal): its status and detail; a 503 always carries
  `Retry-After`, so a sender or client knows when to try again. FastAPI's 400 for a body that
  is not UTF-8 is reworded to say so.
- RequestValidationError (a body or parameter FastAPI could not parse): 422 naming each field
  and what was wrong, never the input itself. FastAPI's default echoes the input, which fails
  to encode when it is undecodable (`\\xff` as text, a lone surrogate in JSON).
- Anything else is a bug: logged with its traceback and answered JSON 500, as a last resort;
  the causes are fixed where they arise, not here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException  # FastAPI's and the router's own 404/405

logger = logging.getLogger("remediation.service")

RETRY_AFTER_SECONDS = 5
MAX_MESSAGE_CHARS = 500


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The error body; the message made one line, bounded, and encodable whatever the
    caller put into it (a lone surrogate becomes "?")."""
    line = " ".join(str(message).split())[:MAX_MESSAGE_CHARS]
    safe = line.encode("utf-8", "replace").decode("utf-8")
    answer_headers = dict(headers or {})
    if status == 503:
        answer_headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
    return JSONResponse({"error": safe}, status_code=status, headers=answer_headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if isinstance(exc.__cause__, UnicodeDecodeError):
        # FastAPI's own 400 for a JSON body that is not UTF-8 only says "error parsing".
        return error_response(400, "the body is not UTF-8; send JSON encoded as UTF-8")
    return error_response(exc.status_code, str(exc.detail), exc.headers)


def _where(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc) or "request"


def validation_message(errors: Sequence[Any]) -> str:
    """`body.plan_id: Field required; body.reason: ...`, then how to fix it."""
    problems = []
    for error in errors[:5]:
        problems.append(f"{_where(error.get('loc', ()))}: {error.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return (
        f"the request does not fit the endpoint: {'; '.join(problems)}{more}; send JSON "
        "(Content-Type: application/json, UTF-8) as the endpoint's schema in /docs says"
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, validation_message(exc.errors()))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "the service failed on this request; its log says why")


def install(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
