"""What the service's routers share: the error body every refusal has, the Temporal client
the app factory puts on `app.state`, and the guards of a signed webhook (body size limit,
configured secrets, HMAC check, refusal counted in REJECTED). The alert intake and the Slack
interactions endpoint both authenticate raw bytes this way before parsing anything."""

from __future__ import annotations

import time
from typing import Any

from fastapi import HTTPException, Request
from pydantic import BaseModel
from temporalio.client import Client, RPCTimeoutOrCancelledError
from temporalio.service import RPCError

from activities.approval_auth import AuthenticationFailedError, identify
from activities.config import ConfigError, SecretRef, load_config
from activities.secrets.references import resolve_secret
from workers.body_limit import MAX_BODY_BYTES, BodyTooLarge
from workers.browser_sessions import COOKIE, SessionRefusedError, read_session
from workers.error_handlers import RETRY_AFTER_SECONDS
from workers.metrics import REJECTED
from workers.webhook_auth import any_signature_matches, timestamp_fresh


class ErrorBody(BaseModel):
    error: str


# The refusals a signed webhook can get, for the OpenAPI document.
WEBHOOK_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody},
    413: {"model": ErrorBody},
    422: {"model": ErrorBody},
}


def temporal_client(request: Request) -> Client:
    """The app's Temporal client, connected at start-up (see `workers.service.lifespan`)."""
    client: Client = request.app.state.client
    return client


def refuse(source: str, reason: str, status: int, message: str) -> HTTPException:
    REJECTED.labels(source, reason).inc()
    return HTTPException(status_code=status, detail=message)


async def read_body(request: Request, source: str) -> bytes:
    """The raw body, for authentication. Its size is bounded as it streams in, before
    anything here reads it (`workers.body_limit`, around the whole app)."""
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:  # only if the app was assembled without BodyLimit
        REJECTED.labels(source, "too_large").inc()
        raise BodyTooLarge()
    return body


def configured_secrets(refs: list[SecretRef], source: str) -> list[str]:
    if not refs:
        raise refuse(source, "not_configured", 401, f"{source} intake has no credential configured")
    return [resolve_secret(ref) for ref in refs]


def check_hmac(
    source: str,
    refs: list[SecretRef],
    signed: bytes,
    signatures: list[str],
    timestamp: str | None = None,
) -> None:
    """The sender's signature over `signed`, under any configured secret; where the sender
    signs a timestamp (`timestamp` not None), it must also be inside the window."""
    config = load_config()
    secrets = configured_secrets(refs, source)
    window = config.intake.timestamp_tolerance_seconds
    if timestamp is not None and not timestamp_fresh(timestamp, time.time(), window):
        raise refuse(
            source,
            "stale",
            401,
            f"the signed timestamp is missing or not within {window} s of now: sign and send "
            "the current time (and check the sender's clock)",
        )
    if not any_signature_matches(secrets, signed, signatures):
        raise refuse(source, "unauthenticated", 401, "missing or wrong signature")


def bearer_token(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(status_code=401, detail="send Authorization: Bearer <your token>")
    return token.strip()


def caller_identity(authorization: str) -> str:
    """The configured identity whose token the caller sent; 401 otherwise."""
    try:
        return identify(load_config(), bearer_token(authorization))
    except AuthenticationFailedError as err:
        raise HTTPException(status_code=401, detail=str(err)) from None


def caller_or_session_identity(request: Request, authorization: str) -> str:
    """The caller's identity from a bearer token, else from a browser session cookie
    (`workers.browser_sessions`); 401 with neither, never anonymous."""
    return caller_or_session(request, authorization)[0]


def caller_or_session(request: Request, authorization: str) -> tuple[str, tuple[str, ...]]:
    """`caller_or_session_identity` with the caller's groups: a token's identity has its
    configured groups; a session's, those and the groups its identity provider vouched for
    at sign-in."""
    if authorization:
        who = caller_identity(authorization)
        return who, tuple(load_config().identities[who].groups)
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        raise HTTPException(
            status_code=401,
            detail="send Authorization: Bearer <your token>, or sign in for a session cookie "
            "(POST /session) and let the browser include it",
        )
    try:
        session = read_session(load_config(), cookie)
        return session.identity, session.groups
    except SessionRefusedError as err:
        raise HTTPException(status_code=401, detail=str(err)) from None
    except ConfigError as err:  # the signing key that verifies sessions cannot be read
        raise HTTPException(503, f"the service cannot verify sessions: {err}") from None


# What a call to Temporal raises when the server (or the worker answering a query or an
# Update) does not answer in time.
TEMPORAL_DOWN = (RPCError, RPCTimeoutOrCancelledError)


def why_unreachable(err: RPCError | RPCTimeoutOrCancelledError) -> str:
    return err.status.name if isinstance(err, RPCError) else "timed out"


def temporal_unavailable(err: RPCError | RPCTimeoutOrCancelledError) -> HTTPException:
    """Temporal (or the worker answering a query) did not answer: 503 with Retry-After, so a
    caller retries."""
    how = why_unreachable(err)
    return HTTPException(
        status_code=503,
        detail=f"Temporal did not answer ({how}): retry shortly; if it lasts, "
        "check that the Temporal server is up and a worker is running",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
