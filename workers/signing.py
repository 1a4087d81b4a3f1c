"""What the approval service signs, for identities it has authenticated (a token, a verified
Slack click, a verified alert sender): gate decisions, a run's requester, the kill switch.

Only the service process calls these: it alone resolves the private key. Each token is bound
to what it decides and expires (`activities/decision_tokens.py`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from activities import decision_tokens
from activities.approval_auth import DecisionKind, DecisionRequest, signing_key
from activities.config import EngineConfig
from activities.decision_tokens import TokenKind
from workflows.models import GateView, RunbookInput


def _groups(config: EngineConfig, identity: str) -> list[str]:
    known = config.identities.get(identity)
    return sorted(known.groups) if known else []


def gate_decision(
    config: EngineConfig,
    approver: str,
    gate: GateView,
    kind: DecisionKind,
    reason: str = "",
    groups: tuple[str, ...] | None = None,
) -> DecisionRequest:
    """A decision on exactly the gate the caller was shown: this run, this opening, this plan.
    `groups`: the approver's groups as their sign-in established them (the config's plus
    those the identity provider vouched for); by default the config's."""
    token = decision_tokens.issue(
        signing_key(config),
        audience="gate",
        kind=kind,
        subject=approver,
        groups=sorted(groups) if groups is not None else _groups(config, approver),
        workflow_id=gate.workflow_id,
        run_id=gate.run_id,
        gate=gate.gate,
        plan_id=gate.plan.plan_id,
        reason=reason,
        now=datetime.now(UTC),
        ttl=timedelta(seconds=config.approvals.max_decision_age_seconds),
    )
    return DecisionRequest(token=token, approver=approver, plan_id=gate.plan.plan_id)


def start_token(config: EngineConfig, workflow_id: str, params: RunbookInput) -> str:
    """Who requests this run, bound to its workflow id and its whole input."""
    return decision_tokens.issue(
        signing_key(config),
        audience="start",
        kind="start",
        subject=params.requested_by,
        groups=_groups(config, params.requested_by),
        workflow_id=workflow_id,
        input_hash=params.input_hash(),
        now=datetime.now(UTC),
        ttl=timedelta(seconds=config.approvals.start_token_ttl_seconds),
    )


def safety_decision(
    config: EngineConfig, who: str, kind: TokenKind, workflow_id: str, reason: str = ""
) -> str:
    """A pause or resume of the kill switch, by an authenticated identity."""
    return decision_tokens.issue(
        signing_key(config),
        audience="safety",
        kind=kind,
        subject=who,
        groups=_groups(config, who),
        workflow_id=workflow_id,
        reason=reason,
        now=datetime.now(UTC),
        ttl=timedelta(seconds=config.approvals.max_decision_age_seconds),
    )
