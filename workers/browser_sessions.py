"""Browser sessions: a short-lived, signed, HttpOnly cookie that stands for a configured
identity, for callers that cannot send `Authorization: Bearer` themselves (the Temporal UI
calling the codec endpoint with "include cross-origin credentials").

The cookie is a JWT signed with the approval service's Ed25519 key (audience "session", so
it is never a decision) naming only the identity; groups are read from the config on every
request, so removing someone from a group takes effect at once. Stateless: any process of
the service verifies it. The sign-in that issues it is `workers/session_routes.py`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import jwt
from fastapi import Response

from activities import decision_tokens
from activities.approval_auth import signing_key
from activities.config import EngineConfig

COOKIE = "remediate_session"
AUDIENCE = "session"


class SessionRefusedError(Exception):
    """The cookie is not a current session of a configured identity; the message says why."""


def issue_session(config: EngineConfig, identity: str, now: datetime) -> str:
    ttl = timedelta(seconds=config.codec_server.session_ttl_seconds)
    claims = {
        "iss": decision_tokens.ISSUER,
        "aud": AUDIENCE,
        "sub": identity,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
    }
    return jwt.encode(claims, signing_key(config), algorithm=decision_tokens.ALGORITHM)


def session_identity(config: EngineConfig, token: str) -> str:
    """The identity the session stands for, if it is authentic, current and still configured."""
    try:
        claims = jwt.decode(
            token,
            signing_key(config).public_key(),
            algorithms=[decision_tokens.ALGORITHM],
            audience=AUDIENCE,
            issuer=decision_tokens.ISSUER,
            options={"require": ["exp", "iat", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise SessionRefusedError("the session has expired: sign in again") from None
    except jwt.InvalidTokenError:
        raise SessionRefusedError("the session cookie is not valid: sign in again") from None
    identity = str(claims["sub"])
    if identity not in config.identities:
        raise SessionRefusedError(f"{identity} is no longer a configured identity")
    return identity


def set_session_cookie(response: Response, token: str, config: EngineConfig, secure: bool) -> None:
    """HttpOnly (no script reads it) and SameSite=Strict: the browser sends it only on
    requests from the same site (the UI on another port of the same host is the same site)."""
    response.set_cookie(
        COOKIE,
        token,
        max_age=config.codec_server.session_ttl_seconds,
        httponly=True,
        samesite="strict",
        secure=secure,
        path="/",
    )


def clear_session_cookie(response: Response, secure: bool) -> None:
    response.delete_cookie(COOKIE, httponly=True, samesite="strict", secure=secure, path="/")
