"""Authenticating alert senders: HMAC signatures where the sender signs, a bearer or basic
credential where it cannot. Every comparison is constant-time and on bytes, and every check
accepts a list of secrets so that one can be rotated without dropping alerts.

Header values arrive as whatever bytes the sender put there (Starlette decodes them as
latin-1), so nothing here may assume ASCII: an odd value is a mismatch, never an exception."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable


def hmac_sha256_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def as_bytes(presented: str) -> bytes:
    """A presented credential as bytes for `hmac.compare_digest`, which refuses non-ASCII
    str; "surrogatepass" so that no str at all makes the encoding raise."""
    return presented.encode("utf-8", "surrogatepass")


def any_signature_matches(secrets: Iterable[str], message: bytes, presented: Iterable[str]) -> bool:
    """True if any presented hex signature is the HMAC of `message` under any secret."""
    expected = [hmac_sha256_hex(secret, message).encode() for secret in secrets]
    found = False
    for signature in presented:
        for candidate in expected:
            # No early exit: the time taken does not tell which secret or position matched.
            found |= hmac.compare_digest(candidate, as_bytes(signature.strip().lower()))
    return found


def versioned_signatures(header: str, version: str = "v1") -> list[str]:
    """`v1=abc,v1=def` -> ["abc", "def"] (other versions are ignored)."""
    prefix = f"{version}="
    return [
        part.strip()[len(prefix) :] for part in header.split(",") if part.strip().startswith(prefix)
    ]


def timestamp_fresh(timestamp: str, now: float, tolerance_seconds: int) -> bool:
    try:
        sent = float(timestamp)
    except ValueError:
        return False
    return abs(now - sent) <= tolerance_seconds


def credential_matches(authorization: str, tokens: Iterable[str]) -> bool:
    """A bearer token, or basic auth whose password is the token (Alertmanager's
    `http_config` offers both)."""
    scheme, _, value = authorization.partition(" ")
    presented = ""
    if scheme.lower() == "bearer":
        presented = value.strip()
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):  # binascii.Error, or non-ASCII text
            return False
        presented = decoded.partition(":")[2]
    if not presented:
        return False
    found = False
    for token in tokens:
        found |= hmac.compare_digest(token.encode(), as_bytes(presented))
    return found
