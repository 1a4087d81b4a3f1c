"""Who a caller is, and the keys that sign and verify their decisions.

The approval service (the only holder of the private key) checks a caller's token against the
hashed tokens in the config and signs decisions for that identity (`activities/
decision_tokens.py`). Workers resolve only the public keys; the gate verifies decisions itself.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, Field
from temporalio import activity

from activities import decision_tokens, known_keys
from activities.config import ApprovalsConfig, ConfigError, EngineConfig
from activities.decision_tokens import DecisionKind as DecisionKind  # re-exported
from activities.refs import SecretRef
from activities.secrets.references import resolve_secret


class AuthenticationFailedError(Exception):
    """The caller's credential does not match any configured identity."""


class DecisionRequest(BaseModel):
    """An approval or rejection as sent to the `approve`/`reject` Update: a decision token
    signed by the approval service.

    The other fields are the HMAC-signed decisions of runs recorded before signed tokens;
    they are read only when such a history is replayed, and never accepted live."""

    token: str = ""
    plan_id: str = ""
    approver: str = ""
    reason: str = ""
    issued_at: datetime | None = None
    signature: str = ""


class AuthenticationInput(BaseModel):
    workflow_id: str
    kind: DecisionKind
    request: DecisionRequest


class AuthenticationResult(BaseModel):
    authenticated: bool
    identity: str
    groups: list[str] = Field(default_factory=list)
    reason: str = ""


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def identify(config: EngineConfig, token: str) -> str:
    """The identity whose stored hash matches this token."""
    digest = token_sha256(token)
    for name, identity in config.identities.items():
        if identity.token_sha256 and hmac.compare_digest(identity.token_sha256, digest):
            return name
    raise AuthenticationFailedError(
        "the token matches no identity in the config; check REMEDIATE_TOKEN"
    )


def signing_key(config: EngineConfig) -> Ed25519PrivateKey:
    """The approval service's private key. Only the service calls this."""
    try:
        return decision_tokens.private_key(resolve_secret(config.approvals.signing_key))
    except ValueError as err:
        raise ConfigError(f"[approvals] signing_key: {err}") from None


def verify_keys(approvals: ApprovalsConfig) -> list[str]:
    """The public keys that verify decisions, resolved and checked (base64 of each)."""
    keys = []
    for index, ref in enumerate(approvals.verify_keys):
        text = resolve_secret(ref) if isinstance(ref, SecretRef) else ref
        try:
            keys.append(decision_tokens.public_text(decision_tokens.public_key(text)))
        except ValueError as err:
            raise ConfigError(f"[approvals] verify_keys[{index}]: {err}") from None
    if not keys:
        raise ConfigError("[approvals] verify_keys is empty: no decision could be verified")
    known_keys.remember(keys)
    return keys


@activity.defn
async def authenticate_decision(params: AuthenticationInput) -> AuthenticationResult:
    """What runs recorded before signed decisions called to check an HMAC decision. It stays
    registered for them, and refuses: the shared HMAC key is gone, so such a decision can no
    longer be told from a forgery."""
    return AuthenticationResult(
        authenticated=False,
        identity=params.request.approver,
        reason="HMAC-signed decisions are no longer accepted; decide again through the "
        "approval service",
    )
