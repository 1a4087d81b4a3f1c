"""The decision path of runs recorded before decisions were signed tokens (HMAC, checked by
the `authenticate_decision` activity). Only a replay of such a history takes it: it issues the
same commands those runs issued, so they keep replaying; live decisions never come here."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.approval_auth import (
        AuthenticationInput,
        DecisionKind,
        DecisionRequest,
        authenticate_decision,
    )
    from workflows.models import ApprovalDecision, DecisionOutcome
    from workflows.policies import HEARTBEAT_TIMEOUT

if TYPE_CHECKING:
    from workflows.approval_gate import ApprovalGate


async def legacy_decide(
    gate: ApprovalGate, kind: DecisionKind, request: DecisionRequest
) -> ApprovalDecision:
    auth = await workflow.execute_activity(
        authenticate_decision,
        AuthenticationInput(workflow_id=workflow.info().workflow_id, kind=kind, request=request),
        start_to_close_timeout=timedelta(seconds=30),
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
    )

    def refuse(reason: str) -> None:
        gate.audit.record(
            "decision_refused",
            f"decision from {request.approver!r} refused: {reason}",
            actor=request.approver,
            plan_id=request.plan_id,
        )
        raise ApplicationError(f"decision refused: {reason}", type="DecisionRefused")

    if not auth.authenticated:
        refuse(f"not authenticated: {auth.reason}")
    for earlier in reversed(gate.decisions):
        if earlier.plan_id == request.plan_id:
            if (kind == "approve") == (earlier.outcome == DecisionOutcome.APPROVED):
                return earlier
            raise ApplicationError(
                f"plan {earlier.plan_id} was already {earlier.outcome.value} by "
                f"{earlier.decided_by}",
                type="GateAlreadyDecided",
            )
    if gate.open_plan is None:
        await workflow.wait_condition(lambda: gate.open_plan is not None or gate.run_finished)
    plan = gate.open_plan
    if plan is None:
        refuse("the run finished before any gate opened")
    assert plan is not None
    if request.plan_id != plan.plan_id:
        refuse(f"plan {request.plan_id} is not the open plan {plan.plan_id}")
    if gate.settings.required_group not in auth.groups:
        refuse(f"{auth.identity} is not in the required group {gate.settings.required_group}")
    if gate.settings.four_eyes and auth.identity == gate.requested_by:
        refuse(f"{auth.identity} requested this run and cannot approve it")
    outcome = DecisionOutcome.APPROVED if kind == "approve" else DecisionOutcome.REJECTED
    decision = ApprovalDecision(
        outcome=outcome,
        plan_id=plan.plan_id,
        decided_by=auth.identity,
        decided_at=workflow.now(),
        reason=request.reason,
        gate=gate.instance,
        approvers=[auth.identity],
    )
    gate.record_decision(decision)
    return decision
