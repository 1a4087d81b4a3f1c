"""Browser sessions: a short-lived, signed, HttpOnly cookie that stands for a configured
identity, for callers that cannot send `Authorization: Bearer` themselves: the Temporal UI
calling the codec endpoint with "include cross-origin credentials", and a person on the
approval pages (`workers/page_routes.py`).

The cookie is a JWT signed with the approval service's Ed25519 key (audience "session", so
it is never a decision) naming the identity, how it signed in, and a session id that the
pages' CSRF tokens are bound to (`workers/csrf.py`). Groups are read from the config on every
request, so removing someone from a group takes effect at once; a sign-in through the
identity provider adds the groups the provider vouched for at sign-in (`idp_groups`), which
last as long as the session. Stateless: any process of the service verifies it. The sign-ins
that issue it are `workers/session_routes.py` (a token) and `workers/sign_in_routes.py` (a
token on the page, or OpenID Connect).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import jwt
from fastapi import Response

from activities import decision_tokens
from activities.approval_auth import signing_key
from activities.config import EngineConfig

COOKIE = "remediate_session"
AUDIENCE = "session"

SignInMethod = Literal["token", "oidc"]
SameSite = Literal["strict", "lax"]


class SessionRefusedError(Exception):
    """The cookie is not a current session of a configured identity; the message says why."""

    def __init__(self, message: str, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class BrowserSession:
    identity: str
    # The identity's groups in the config now, plus those its identity provider granted.
    groups: tuple[str, ...]
    # Binds the pages' CSRF tokens to this sign-in ("" in sessions issued before it existed).
    session_id: str
    signed_in_with: SignInMethod
    idp_groups: tuple[str, ...]
    expires_at: datetime


def issue_session(
    config: EngineConfig,
    identity: str,
    now: datetime,
    *,
    ttl: timedelta | None = None,
    signed_in_with: SignInMethod = "token",
    idp_groups: tuple[str, ...] = (),
) -> str:
    lasts = ttl or timedelta(seconds=config.codec_server.session_ttl_seconds)
    claims = {
        "iss": decision_tokens.ISSUER,
        "aud": AUDIENCE,
        "sub": identity,
        "jti": uuid.uuid4().hex,
        "via": signed_in_with,
        "idp_groups": sorted(idp_groups),
        "iat": int(now.timestamp()),
        "exp": int((now + lasts).timestamp()),
    }
    return jwt.encode(claims, signing_key(config), algorithm=decision_tokens.ALGORITHM)


def read_session(config: EngineConfig, token: str) -> BrowserSession:
    """The session, if it is authentic, current and of a still configured identity."""
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
        raise SessionRefusedError("your session has expired: sign in again", expired=True) from None
    except jwt.InvalidTokenError:
        raise SessionRefusedError("the session cookie is not valid: sign in again") from None
    identity = str(claims["sub"])
    known = config.identities.get(identity)
    if known is None:
        raise SessionRefusedError(f"{identity} is no longer a configured identity")
    idp_groups = tuple(str(g) for g in claims.get("idp_groups", []))
    via: SignInMethod = "oidc" if claims.get("via") == "oidc" else "token"
    return BrowserSession(
        identity=identity,
        groups=tuple(sorted(set(known.groups) | set(idp_groups))),
        session_id=str(claims.get("jti", "")),
        signed_in_with=via,
        idp_groups=idp_groups,
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
    )


def session_identity(config: EngineConfig, token: str) -> str:
    """The identity the session stands for, if it is authentic, current and still configured."""
    return read_session(config, token).identity


def set_session_cookie(
    response: Response, token: str, max_age: int, secure: bool, same_site: SameSite = "strict"
) -> None:
    """HttpOnly (no script reads it). SameSite=Strict for the codec's sign-in: the browser
    sends it only on requests from the same site (the UI on another port of the same host is
    the same site). The pages' sign-in uses Lax, so a link from Slack or PagerDuty (another
    site) opens the gate signed in; Lax still keeps it off cross-site POSTs, and every form
    carries a CSRF token besides."""
    response.set_cookie(
        COOKIE,
        token,
        max_age=max_age,
        httponly=True,
        samesite=same_site,
        secure=secure,
        path="/",
    )


def clear_session_cookie(response: Response, secure: bool) -> None:
    response.delete_cookie(COOKIE, httponly=True, samesite="lax", secure=secure, path="/")
