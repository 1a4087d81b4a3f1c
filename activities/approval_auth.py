"""Authenticated approval decisions.

The approval service (the CLI or HTTP service, holding the signing key) verifies the caller's
token against the configured hash and mints a decision signed over exactly what is decided:
workflow, plan id, approve/reject, approver, reason and time. The workflow never sees a token
or the key; it asks this activity whether a decision is authentic, so a decision sent straight
through Temporal without a valid signature is refused.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field
from temporalio import activity

from activities.config import EngineConfig, load_config
from activities.secrets.references import resolve_secret

DecisionKind = Literal["approve", "reject"]
CLOCK_SKEW = timedelta(seconds=60)


class AuthenticationFailedError(Exception):
    """The caller's credential does not match any configured identity."""


class DecisionRequest(BaseModel):
    """An approval or rejection as sent to the `approve`/`reject` Update."""

    plan_id: str
    approver: str
    reason: str = ""
    issued_at: datetime
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
        if hmac.compare_digest(identity.token_sha256, digest):
            return name
    raise AuthenticationFailedError(
        "the token matches no identity in the config; check REMEDIATE_TOKEN"
    )


def _message(workflow_id: str, kind: DecisionKind, request: DecisionRequest) -> bytes:
    issued = request.issued_at.astimezone(UTC).isoformat()
    fields = (workflow_id, request.plan_id, kind, request.approver, request.reason, issued)
    return "\n".join(fields).encode()


def sign_decision(
    key: str, workflow_id: str, kind: DecisionKind, request: DecisionRequest
) -> DecisionRequest:
    digest = hmac.new(key.encode(), _message(workflow_id, kind, request), hashlib.sha256)
    return request.model_copy(update={"signature": digest.hexdigest()})


def mint_decision(
    config: EngineConfig,
    token: str,
    workflow_id: str,
    kind: DecisionKind,
    plan_id: str,
    reason: str = "",
) -> DecisionRequest:
    """What the approval service does for a caller who authenticated with a token."""
    return mint_for(config, identify(config, token), workflow_id, kind, plan_id, reason)


def mint_for(
    config: EngineConfig,
    approver: str,
    workflow_id: str,
    kind: DecisionKind,
    plan_id: str,
    reason: str = "",
) -> DecisionRequest:
    """Sign a decision for an identity the service has already authenticated (by token, or
    by a verified Slack request mapped to a configured identity)."""
    request = DecisionRequest(
        plan_id=plan_id, approver=approver, reason=reason, issued_at=datetime.now(UTC)
    )
    return sign_decision(resolve_secret(config.approvals.signing_key), workflow_id, kind, request)


def check_decision(
    config: EngineConfig, key: str, params: AuthenticationInput, now: datetime
) -> AuthenticationResult:
    request = params.request

    def refuse(reason: str) -> AuthenticationResult:
        return AuthenticationResult(authenticated=False, identity=request.approver, reason=reason)

    if not request.signature:
        return refuse("unsigned decision")
    expected = hmac.new(key.encode(), _message(params.workflow_id, params.kind, request), "sha256")
    if not hmac.compare_digest(expected.hexdigest(), request.signature):
        return refuse("signature does not match this decision (forged or altered)")
    identity = config.identities.get(request.approver)
    if identity is None:
        return refuse(f"{request.approver!r} is not a configured identity")
    age = now - request.issued_at
    if age > timedelta(seconds=config.approvals.max_decision_age_seconds) or age < -CLOCK_SKEW:
        return refuse(f"decision issued at {request.issued_at.isoformat()} is stale")
    return AuthenticationResult(
        authenticated=True, identity=request.approver, groups=sorted(identity.groups)
    )


@activity.defn
async def authenticate_decision(params: AuthenticationInput) -> AuthenticationResult:
    config = load_config()
    key = resolve_secret(config.approvals.signing_key)
    return check_decision(config, key, params, datetime.now(UTC))
