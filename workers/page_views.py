"""What the approval pages show, gathered from Temporal and the config: the open gates (through
`workers.approvals`, the same listing the API and the CLI use), a gate with its run's report,
who or which alert started the run and the policy that applies, and the recent runs.

Read-only: nothing here decides. The routes (`workers/page_routes.py`) render these into the
templates (`workers/templates/`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError

from activities.config import EngineConfig, GateConfig
from workers.approvals import DecisionError, remediation_run
from workers.gate_listing import pending_gates
from workers.payload_codec import PayloadDecryptionError
from workflows.models import HARD_BLAST_RADIUS, GateView, RunbookInput, RunReport, StepRecord
from workflows.names import RUNBOOK_WORKFLOW_TYPES, SA_REQUESTED_BY, SA_STATUS, SA_TARGET
from workflows.runbook import RunbookWorkflow

# Step kinds that are the diagnosis's evidence (what the run found before planning).
EVIDENCE_KINDS = ("diagnosis", "cause", "probe", "assessment")


@dataclass(frozen=True)
class GatePolicy:
    """The rules this gate applies, as the config says them now."""

    required_group: str
    approvals_required: int
    four_eyes: bool
    remind_after: timedelta
    abort_after: timedelta
    auto_approve: str | None
    hard_blast_radius: float = HARD_BLAST_RADIUS


@dataclass(frozen=True)
class RunStart:
    """Who or what started the run (None fields: it does not say)."""

    requested_by: str
    requester_verified: bool
    reason: str = ""
    dry_run: bool = False
    alert_source: str | None = None
    alert_name: str | None = None
    alert_summary: str | None = None
    alert_labels: dict[str, str] = field(default_factory=dict)
    alert_started_at: datetime | None = None
    alerts_attached: int = 0


@dataclass(frozen=True)
class RunView:
    workflow_id: str
    execution: str  # Temporal's: RUNNING, COMPLETED, FAILED...
    status: str  # the engine's (search attribute)
    target: str
    requested_by: str
    started_at: datetime
    closed_at: datetime | None
    report: RunReport | None = None
    start: RunStart | None = None
    gate: GateView | None = None


@dataclass(frozen=True)
class GatePage:
    gate: GateView
    policy: GatePolicy
    run: RunView
    evidence: list[StepRecord]


async def open_gates(client: Client) -> list[GateView]:
    gates = await pending_gates(client)
    return sorted(gates, key=lambda g: g.abort_at)


async def recent_runs(client: Client, limit: int = 50) -> list[RunView]:
    types = ", ".join(f"'{t}'" for t in RUNBOOK_WORKFLOW_TYPES.values())
    runs = []
    async for execution in client.list_workflows(f"WorkflowType IN ({types})", limit=limit):
        attrs = execution.typed_search_attributes
        runs.append(
            RunView(
                workflow_id=execution.id,
                execution=execution.status.name if execution.status else "",
                status=attrs.get(SA_STATUS) or "",
                target=attrs.get(SA_TARGET) or "",
                requested_by=attrs.get(SA_REQUESTED_BY) or "",
                started_at=execution.start_time,
                closed_at=execution.close_time,
            )
        )
    return runs


async def run_view(client: Client, config: EngineConfig, workflow_id: str) -> RunView:
    """The run with its report (the result once it ended, the `report` query while it runs)
    and how it started. DecisionError 404 if there is no such remediation."""
    described = await remediation_run(client, workflow_id)
    handle = client.get_workflow_handle(workflow_id, result_type=RunReport)
    running = described.status == WorkflowExecutionStatus.RUNNING
    report: RunReport | None = None
    try:
        if described.status == WorkflowExecutionStatus.COMPLETED:
            report = await handle.result()
        else:
            report = await handle.query(RunbookWorkflow.report)
    except (RPCError, WorkflowFailureError):
        report = None  # a failed or terminated run, or no worker to answer: the status says
    gate = await handle.query(RunbookWorkflow.pending_gate) if running else None
    attrs = described.typed_search_attributes
    return RunView(
        workflow_id=workflow_id,
        execution=described.status.name if described.status else "",
        status=attrs.get(SA_STATUS) or (report.status.value if report else ""),
        target=attrs.get(SA_TARGET) or "",
        requested_by=attrs.get(SA_REQUESTED_BY) or "",
        started_at=described.start_time,
        closed_at=described.close_time,
        report=report,
        start=await run_start(client, workflow_id, report, gate),
        gate=gate,
    )


async def gate_page(client: Client, config: EngineConfig, workflow_id: str) -> GatePage | None:
    """The gate open on `workflow_id` with everything a lead needs to decide it; None while
    the run has no open gate. DecisionError 404 if there is no such remediation."""
    run = await run_view(client, config, workflow_id)
    if run.gate is None:
        return None
    steps = run.report.steps if run.report else []
    return GatePage(
        gate=run.gate,
        policy=gate_policy(config, run.gate),
        run=run,
        evidence=[s for s in steps if s.kind in EVIDENCE_KINDS],
    )


def gate_policy(config: EngineConfig, gate: GateView) -> GatePolicy:
    """The policy of the gate's runbook (`[runbooks.<name>.gate]`); the group and quorum are
    the gate's own, as it will apply them."""
    runbook = getattr(config.runbooks, gate.runbook, None)
    settings: GateConfig = runbook.gate if runbook is not None else GateConfig()
    auto = settings.auto_approve
    return GatePolicy(
        required_group=gate.required_group,
        approvals_required=gate.approvals_required,
        four_eyes=settings.four_eyes,
        remind_after=settings.remind_after,
        abort_after=settings.abort_after,
        auto_approve=auto.name if auto is not None else None,
    )


async def run_start(
    client: Client, workflow_id: str, report: RunReport | None, gate: GateView | None
) -> RunStart | None:
    """Who or which alert started the run, from its input (the first event of its history,
    decoded with the client's converter, so an encrypted history reads too)."""
    started = await _run_input(client, workflow_id)
    if started is None:
        return None
    alert = started.alert
    return RunStart(
        requested_by=started.requested_by,
        requester_verified=gate.requester_verified if gate else bool(started.requester_token),
        reason=started.reason,
        dry_run=started.dry_run,
        alert_source=alert.source if alert else None,
        alert_name=alert.name if alert else None,
        alert_summary=alert.summary if alert else None,
        alert_labels=dict(alert.labels) if alert else {},
        alert_started_at=alert.starts_at if alert else None,
        alerts_attached=report.alerts_attached if report else 0,
    )


async def _run_input(client: Client, workflow_id: str) -> RunbookInput | None:
    handle = client.get_workflow_handle(workflow_id)
    try:
        async for event in handle.fetch_history_events(page_size=1):
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            if not payloads:
                return None
            decoded: list[Any] = await client.data_converter.decode(payloads, [RunbookInput])
            found = decoded[0]
            return found if isinstance(found, RunbookInput) else None
    except (RPCError, PayloadDecryptionError, ValueError, TypeError):
        return None  # unreadable (a key this process lacks): the page says it does not know
    return None


def not_found(err: DecisionError) -> bool:
    return err.status == 404
