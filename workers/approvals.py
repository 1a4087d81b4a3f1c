"""The approval service's core, shared by the HTTP API and the CLI: a run's open gate, and an
authenticated caller's decision turned into a signed Update on the exact plan they saw. The
listing of every open gate is workers/gate_listing.py (from visibility); here, each call asks
the run itself, since a decision must bind to the gate as it is now."""

from __future__ import annotations

from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities import decision_tokens
from activities.approval_auth import DecisionKind, DecisionRequest, identify
from activities.config import EngineConfig
from workers.api_shapes import DecisionError as DecisionError
from workers.api_shapes import RunEndedError as RunEndedError
from workers.signing import gate_decision
from workflows.models import ApprovalDecision, GateView
from workflows.names import READ_ONLY, RUNBOOK_WORKFLOW_TYPES
from workflows.read_only import EndHold, ReadOnlyWorkflow
from workflows.runbook import RunbookWorkflow


class NotARemediationError(DecisionError):
    """The workflow exists but is no runbook's run (the safety envelope, say): it has no
    gate, and a decision on it is a mistake in the id."""

    def __init__(self, workflow_id: str, workflow_type: str) -> None:
        super().__init__(
            f"{workflow_id} is not a remediation run (it is a {workflow_type}); use the id of "
            "a run from GET /approvals",
            404,
        )


async def remediation_run(client: Client, workflow_id: str) -> WorkflowExecutionDescription:
    """The run `workflow_id` as Temporal describes it: DecisionError 404 if there is none, or
    if it is not a runbook's run (no `pending_gate`, `approve` or `reject` to call on it)."""
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        # INVALID_ARGUMENT: an id Temporal refuses (too long, say) is no run either.
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            raise DecisionError(f"no remediation {workflow_id!r}", 404) from None
        raise
    if described.workflow_type not in RUNBOOK_WORKFLOW_TYPES.values():
        raise NotARemediationError(workflow_id, described.workflow_type)
    return described


async def open_gate(client: Client, workflow_id: str) -> GateView | None:
    """The gate open on `workflow_id` now, or None while it runs without one (between gates,
    or before its first). DecisionError 404 if there is no such run; RunEndedError if it
    has finished."""
    described = await remediation_run(client, workflow_id)
    if described.status != WorkflowExecutionStatus.RUNNING:
        raise RunEndedError(workflow_id, described.status)
    return await client.get_workflow_handle(workflow_id).query(RunbookWorkflow.pending_gate)


async def decide(
    client: Client,
    config: EngineConfig,
    token: str,
    workflow_id: str,
    kind: DecisionKind,
    reason: str = "",
    plan_id: str | None = None,
) -> ApprovalDecision:
    """`plan_id` is the plan the caller was shown; if the open plan is another, nothing is
    decided (a stale link or button never approves a different plan)."""
    approver = identify(config, token)  # AuthenticationFailedError before anything happens
    return await decide_as(client, config, approver, workflow_id, kind, reason, plan_id)


async def decide_as(
    client: Client,
    config: EngineConfig,
    approver: str,
    workflow_id: str,
    kind: DecisionKind,
    reason: str = "",
    plan_id: str | None = None,
    *,
    shown_gate: tuple[str, int] | None = None,
    groups: tuple[str, ...] | None = None,
) -> ApprovalDecision:
    """`shown_gate`: the (run id, gate instance) the caller's page showed; a gate opened
    again since (even with the same plan) is not decided from a page that showed another.
    `groups`: the approver's groups as their sign-in established them (`gate_decision`)."""
    await remediation_run(client, workflow_id)
    handle = client.get_workflow_handle(workflow_id)
    gate = await handle.query(RunbookWorkflow.pending_gate)
    if gate is None:
        raise DecisionError(f"{workflow_id} has no gate awaiting a decision", 409)
    if plan_id is not None and plan_id != gate.plan.plan_id:
        raise DecisionError(
            f"plan {plan_id} is no longer the open plan ({gate.plan.plan_id}); review it again",
            409,
        )
    if shown_gate is not None and shown_gate != (gate.run_id, gate.gate):
        raise DecisionError(
            f"the gate you reviewed has closed and another opened on {workflow_id} (gate "
            f"{gate.gate}); review it again",
            409,
        )
    request = gate_decision(config, approver, gate, kind, reason, groups)
    update = RunbookWorkflow.approve if kind == "approve" else RunbookWorkflow.reject
    try:
        return await handle.execute_update(update, request, id=_update_id(request))
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:  # it ended since the query
            raise RunEndedError(workflow_id, None) from None
        raise
    except WorkflowUpdateFailedError as err:
        raise DecisionError(_reason(err), 403) from None


async def end_hold(
    client: Client, config: EngineConfig, token: str, workflow_id: str, reason: str = ""
) -> str:
    """End a read-only hold early, as the caller's identity. Not a decision to restore
    writes: the run's exit plan then waits at its gate like any other."""
    caller = identify(config, token)  # AuthenticationFailedError before anything happens
    described = await remediation_run(client, workflow_id)
    if described.workflow_type != RUNBOOK_WORKFLOW_TYPES[READ_ONLY]:
        raise DecisionError(f"{workflow_id} is not a read_only run: it holds nothing", 409)
    handle = client.get_workflow_handle(workflow_id)
    try:
        return await handle.execute_update(
            ReadOnlyWorkflow.end_hold, EndHold(requested_by=caller, reason=reason)
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:  # it ended since
            raise RunEndedError(workflow_id, None) from None
        raise
    except WorkflowUpdateFailedError as err:
        raise DecisionError(f"{workflow_id}: {_reason(err)}", 409) from None


def _reason(err: WorkflowUpdateFailedError) -> str:
    """The workflow's refusal as it wrote it: `str()` of an ApplicationError would prefix its
    type ("DecisionRefused: decision refused: ...")."""
    cause = err.cause
    return cause.message if isinstance(cause, ApplicationError) else str(cause)


def _update_id(request: DecisionRequest) -> str:
    """The decision's unique id: a retry of this very request is one Update; a new request
    (another click) is a new decision the gate judges itself."""
    claims = decision_tokens.unverified_claims(request.token)
    return f"decision-{claims.jti}"
