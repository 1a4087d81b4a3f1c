"""Signed decisions: what the approval service issues and everyone else verifies.

A decision (approve, reject, pause, resume, or a run's start) is a JWS compact token (a JWT)
signed with the service's Ed25519 key (`EdDSA`). Only the service holds the private key;
workers and workflows hold public keys, a list so a key can be rotated without downtime, and
can verify decisions but never mint them.

Verification is pure computation with the caller's clock (`now`), so a workflow can run it in
an Update validator with `workflow.now()`: no I/O, no wall clock. The claims bind a decision
to everything it decides; what each binding must equal is the caller's to check (the gate
checks run id, gate instance and plan id against its own state).
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import BaseModel, Field, ValidationError

ISSUER = "remediate-approvals"
ALGORITHM = "EdDSA"
# Clocks of the service and the workers may differ by this much.
CLOCK_SKEW = timedelta(seconds=60)

DecisionKind = Literal["approve", "reject"]
Audience = Literal["gate", "start", "safety"]
TokenKind = Literal["approve", "reject", "start", "pause", "resume"]


class TokenRefusedError(Exception):
    """The token is not an authentic, current decision; the message says why (no secret)."""


class UnknownKeyError(TokenRefusedError):
    """The token names a signing key (`kid`) the verifier does not list: forged, or signed
    by a key added after the verifier read its keys (a rotation). Its signature was not
    checked."""

    def __init__(self, message: str, kid: str) -> None:
        super().__init__(message)
        self.kid = kid


class DecisionClaims(BaseModel):
    """What a signed decision says. `wid`, `rid`, `gate` and `plan` bind it to one gate of
    one run; `jti` makes it usable once."""

    iss: str
    aud: Audience
    sub: str  # the identity the service authenticated
    groups: list[str] = Field(default_factory=list)
    kind: TokenKind
    jti: str
    iat: int
    exp: int
    wid: str  # workflow id
    rid: str = ""  # run id ("" for a start: the run does not exist yet)
    gate: int = 0  # gate instance within the run, from 1
    plan: str = ""  # plan id
    reason: str = ""
    # For a start: a hash of the run's input, so the token cannot start a different run.
    input: str = ""

    @property
    def issued_at(self) -> datetime:
        return datetime.fromtimestamp(self.iat, UTC)

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.exp, UTC)


# -- keys ---------------------------------------------------------------------------------


def private_key(text: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM (PKCS#8) or base64 of its 32-byte seed."""
    key = _load(
        text,
        lambda pem: serialization.load_pem_private_key(pem, password=None),
        Ed25519PrivateKey.from_private_bytes,
        "the approval signing key must be an Ed25519 private key: PEM (PKCS#8) or base64 of "
        "its 32-byte seed",
    )
    assert isinstance(key, Ed25519PrivateKey)
    return key


def public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo) or base64 of its 32 bytes."""
    key = _load(
        text,
        serialization.load_pem_public_key,
        Ed25519PublicKey.from_public_bytes,
        "an approval verify key must be an Ed25519 public key: PEM or base64 of its 32 bytes",
    )
    assert isinstance(key, Ed25519PublicKey)
    return key


def _load(
    text: str, from_pem: Callable[[bytes], object], from_raw: Callable[[bytes], object], what: str
) -> object:
    text = text.strip()
    try:
        key = (
            from_pem(text.encode()) if text.startswith("-----BEGIN") else from_raw(_b64decode(text))
        )
        if not isinstance(key, Ed25519PrivateKey | Ed25519PublicKey):
            raise ValueError("not an Ed25519 key")
    except ValueError as err:
        raise ValueError(f"{what} ({err})") from None
    return key


def public_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """Base64 of the raw public key: how config files list verify keys."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def key_id(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """A short, stable id of a key pair (the JWS `kid`), from its public key."""
    return hashlib.sha256(base64.b64decode(public_text(key))).hexdigest()[:16]


def new_private_key_text() -> str:
    seed = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(seed).decode()


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded, altchars=b"-_" if "-" in text or "_" in text else None)
    except ValueError as err:
        raise ValueError(f"not base64: {err}") from None


# -- issuing and verifying ----------------------------------------------------------------


def issue(
    key: Ed25519PrivateKey,
    *,
    audience: Audience,
    kind: TokenKind,
    subject: str,
    groups: Sequence[str],
    workflow_id: str,
    now: datetime,
    ttl: timedelta,
    run_id: str = "",
    gate: int = 0,
    plan_id: str = "",
    reason: str = "",
    input_hash: str = "",
) -> str:
    claims = DecisionClaims(
        iss=ISSUER,
        aud=audience,
        sub=subject,
        groups=sorted(groups),
        kind=kind,
        jti=uuid.uuid4().hex,
        iat=int(now.timestamp()),
        exp=int((now + ttl).timestamp()),
        wid=workflow_id,
        rid=run_id,
        gate=gate,
        plan=plan_id,
        reason=reason,
        input=input_hash,
    )
    return jwt.encode(claims.model_dump(), key, algorithm=ALGORITHM, headers={"kid": key_id(key)})


def verify(
    token: str,
    keys: Sequence[str],
    *,
    audience: Audience,
    now: datetime,
    max_age: timedelta,
) -> DecisionClaims:
    """The claims of an authentic, current token for `audience`, or TokenRefusedError.

    Checks the signature against the key its `kid` names (a token signed by a key that is no
    longer listed is refused), the issuer and audience, and the time: not issued in the future
    (beyond the clock skew), not expired, and not older than `max_age` however long its `exp`.
    """
    if not token:
        raise TokenRefusedError("unsigned decision (no token)")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise TokenRefusedError("malformed decision token") from None
    if header.get("alg") != ALGORITHM:
        raise TokenRefusedError(f"decision token algorithm {header.get('alg')!r} is not EdDSA")
    by_id = {key_id(public_key(text)): text for text in keys}
    kid = str(header.get("kid", ""))
    known = by_id.get(kid)
    if known is None:
        raise UnknownKeyError(
            f"decision signed with key {kid!r}, which is not a configured verify key", kid
        )
    try:
        payload = jwt.api_jws.decode(token, key=public_key(known), algorithms=[ALGORITHM])
        claims = DecisionClaims.model_validate(json.loads(payload))
    except (jwt.InvalidTokenError, ValueError, ValidationError):
        raise TokenRefusedError(
            "signature does not match the decision (forged or altered)"
        ) from None
    if claims.iss != ISSUER or claims.aud != audience:
        raise TokenRefusedError(f"decision is for {claims.iss}/{claims.aud}, not {audience}")
    if claims.issued_at > now + CLOCK_SKEW:
        raise TokenRefusedError(f"decision issued in the future ({claims.issued_at:%H:%M:%S})")
    if claims.expires_at <= now or now - claims.issued_at > max_age:
        raise TokenRefusedError(
            f"decision expired (issued {claims.issued_at:%Y-%m-%d %H:%M:%S} UTC)"
        )
    return claims


def unverified_claims(token: str) -> DecisionClaims:
    """The claims of a token this process just issued (no verification: never use this to
    decide anything)."""
    return DecisionClaims.model_validate(jwt.decode(token, options={"verify_signature": False}))
