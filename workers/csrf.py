"""CSRF tokens for the pages' forms: an HMAC of what the form is bound to (a signed-in
session's id, or before sign-in a random value in a short-lived cookie), under a key derived
from the approval service's signing key. Stateless, so any process of the service checks a
form another one rendered; a token from one session is worthless in another, and a forged
form (another site's, or one without the token) never decides anything.

The Lax session cookie already keeps cross-site POSTs unauthenticated in current browsers;
this is the check that does not depend on the browser (`workers/page_routes.py` also refuses
a POST whose Origin is another site's).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from functools import lru_cache

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from activities.approval_auth import signing_key
from activities.config import EngineConfig

FIELD = "csrf"
# Before sign-in, the forms (the token sign-in) are bound to a random value in this cookie.
PRE_SESSION_COOKIE = "remediate_signin"


class CsrfRefusedError(Exception):
    """A form without a valid CSRF token for the caller's session; the message says what to do."""


def form_token(config: EngineConfig, bound_to: str) -> str:
    """The token a form rendered for `bound_to` carries."""
    if not bound_to:
        raise CsrfRefusedError("no session to bind the form to: sign in again")
    digest = hmac.new(_key(config), b"form\x00" + bound_to.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def check_form_token(config: EngineConfig, bound_to: str, sent: str) -> None:
    if not sent:
        raise CsrfRefusedError(
            "the form carries no CSRF token: submit it from the page itself (reload the page)"
        )
    if not hmac.compare_digest(form_token(config, bound_to), sent):
        raise CsrfRefusedError(
            "the form's CSRF token is not this session's: reload the page and submit it again"
        )


def new_pre_session_value() -> str:
    return secrets.token_urlsafe(24)


def _key(config: EngineConfig) -> bytes:
    raw = signing_key(config).private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return _derive(raw)


@lru_cache(maxsize=4)
def _derive(seed: bytes) -> bytes:
    """A key of its own (HKDF with its own label), so a CSRF token is never a signature
    anything else accepts."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"remediate pages csrf"
    ).derive(seed)
