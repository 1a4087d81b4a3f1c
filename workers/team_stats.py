"""The team's numbers, per runbook, over a period: runs, outcomes, median and p90 time to
approve and to remediate, share auto-approved, refusals (`remediate stats`, GET /stats).

Which runs: Temporal's visibility, runs started in the period whose `RemediationRunbook` is
set (a child run, backup_restore's read-only phases, is part of its parent's and not counted
again). Their numbers: each completed run's report, its result.

What it costs: one visibility List call per 1,000 runs, then per completed run one
GetWorkflowExecutionHistory call that returns only the close event (the RunReport: a few KB
to a few tens of KB with its audit trail, decrypted by the codec), `concurrency` at a time,
`limit` runs at most. Runs still going and runs that ended without a result (cancelled,
failed, terminated, timed out) are counted from visibility alone: no query, so no worker
replays anything for the numbers.

Definitions: time to approve is a person's, from the gate opening to the approval that
closed it (a policy answers as the plan is made and is counted in the auto-approved share
instead); time to remediate runs from the run's start to its verified fix; p90 is the
nearest-rank 90th percentile. Refusals are decisions the gate refused (wrong group, four
eyes, expired, after the gate closed), from the audit trail.
"""

from __future__ import annotations

import asyncio
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus

from workers.http_common import TEMPORAL_DOWN
from workers.payload_codec import PayloadDecryptionError
from workers.stats_period import DEFAULT_CONCURRENCY as DEFAULT_CONCURRENCY
from workers.stats_period import DEFAULT_LIMIT as DEFAULT_LIMIT
from workers.stats_period import DEFAULT_SINCE as DEFAULT_SINCE
from workers.stats_period import SinceError as SinceError
from workers.stats_period import parse_since as parse_since
from workflows.models import DecisionOutcome, RunReport, RunStatus
from workflows.names import RUNBOOK_WORKFLOW_TYPES, SA_RUNBOOK, SA_STATUS


class Distribution(BaseModel):
    count: int
    median_seconds: float | None
    p90_seconds: float | None


class RunbookStats(BaseModel):
    runbook: str
    runs: int
    # Final status (Remediated, Escalated, ...); Running for runs still going; the execution's
    # status (Failed, Terminated, TimedOut) for runs that ended without a report.
    outcomes: dict[str, int]
    time_to_approve: Distribution
    time_to_remediate: Distribution
    approvals: int
    auto_approved: int
    auto_approved_share: float | None
    refusals: int


class TeamStats(BaseModel):
    since: datetime
    until: datetime
    runbook: str | None
    runs: int
    # Completed runs whose report could not be read (Temporal did not answer, or the
    # history is sealed under a key this process lacks): in `runs`, not in the numbers.
    unreadable: int
    # More runs started in the period than `limit`: the oldest were left out.
    truncated: bool
    runbooks: list[RunbookStats]


@dataclass
class RunFacts:
    """What one run adds to its runbook's numbers."""

    runbook: str
    outcome: str
    approve_waits: list[float] = field(default_factory=list)
    approvals: int = 0
    auto_approved: int = 0
    refusals: int = 0
    remediate_seconds: float | None = None
    unreadable: bool = False


def visibility_query(since: datetime, runbook: str | None) -> str:
    runbooks = [runbook] if runbook else list(RUNBOOK_WORKFLOW_TYPES)
    names = ", ".join(f"'{r}'" for r in runbooks)
    stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{SA_RUNBOOK.name} IN ({names}) AND StartTime >= '{stamp}'"


async def team_stats(
    client: Client,
    since: datetime,
    runbook: str | None = None,
    *,
    now: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> TeamStats:
    """The numbers of the runs started since `since` (of `runbook`, or of every runbook).
    ValueError for a runbook that does not exist."""
    if runbook is not None and runbook not in RUNBOOK_WORKFLOW_TYPES:
        raise ValueError(f"unknown runbook {runbook!r}; known: {', '.join(RUNBOOK_WORKFLOW_TYPES)}")
    executions: list[WorkflowExecution] = []
    truncated = False
    async for execution in client.list_workflows(visibility_query(since, runbook)):
        if execution.parent_id:
            continue
        if len(executions) >= limit:
            truncated = True
            break
        executions.append(execution)
    gate = asyncio.Semaphore(concurrency)

    async def facts(execution: WorkflowExecution) -> RunFacts:
        async with gate:
            return await run_facts(client, execution)

    runs = await asyncio.gather(*(facts(e) for e in executions))
    return TeamStats(
        since=since,
        until=now or datetime.now(UTC),
        runbook=runbook,
        runs=len(runs),
        unreadable=sum(r.unreadable for r in runs),
        truncated=truncated,
        runbooks=summarize(runs),
    )


async def run_facts(client: Client, execution: WorkflowExecution) -> RunFacts:
    runbook = execution.typed_search_attributes.get(SA_RUNBOOK) or "?"
    status = execution.status
    if status == WorkflowExecutionStatus.RUNNING:
        return RunFacts(runbook, "Running")
    if status != WorkflowExecutionStatus.COMPLETED:
        # No result to read; the status attribute says how far it got (Cancelled is set).
        said = execution.typed_search_attributes.get(SA_STATUS)
        name = status.name.title().replace("_", "") if status else "Unknown"
        return RunFacts(runbook, said if said == RunStatus.CANCELLED.value else name)
    handle = client.get_workflow_handle(
        execution.id, run_id=execution.run_id, result_type=RunReport
    )
    try:
        report: RunReport = await handle.result(follow_runs=False)
    except (*TEMPORAL_DOWN, PayloadDecryptionError):
        return RunFacts(runbook, "Unreadable", unreadable=True)
    return facts_of(report)


def facts_of(report: RunReport) -> RunFacts:
    """One finished run's contribution, from its report."""
    opened = {
        s.details.get("gate"): s.at
        for s in report.steps
        if s.kind == "gate_opened" and isinstance(s.details.get("gate"), int)
    }
    approved = [d for d in report.decisions if d.outcome == DecisionOutcome.APPROVED]
    waits = [
        (d.decided_at - opened[d.gate]).total_seconds()
        for d in approved
        if d.by_policy is None and d.gate in opened
    ]
    fixed = _fixed_at(report)
    return RunFacts(
        runbook=report.runbook,
        outcome=report.status.value,
        approve_waits=waits,
        approvals=len(approved),
        auto_approved=sum(d.by_policy is not None for d in approved),
        refusals=sum(s.kind == "decision_refused" for s in report.steps),
        remediate_seconds=(fixed - report.started_at).total_seconds() if fixed else None,
    )


def _fixed_at(report: RunReport) -> datetime | None:
    if report.status != RunStatus.REMEDIATED:
        return None
    if "verified" in report.timeline:
        return report.timeline["verified"]
    passed = [s.at for s in report.steps if s.kind == "verification_passed"]
    return passed[-1] if passed else report.finished_at


def summarize(runs: list[RunFacts]) -> list[RunbookStats]:
    by_runbook: dict[str, list[RunFacts]] = {}
    for run in runs:
        by_runbook.setdefault(run.runbook, []).append(run)
    return [_runbook_stats(name, by_runbook[name]) for name in sorted(by_runbook)]


def _runbook_stats(runbook: str, runs: list[RunFacts]) -> RunbookStats:
    approvals = sum(r.approvals for r in runs)
    auto = sum(r.auto_approved for r in runs)
    remediate = [r.remediate_seconds for r in runs if r.remediate_seconds is not None]
    return RunbookStats(
        runbook=runbook,
        runs=len(runs),
        outcomes=dict(Counter(r.outcome for r in runs).most_common()),
        time_to_approve=distribution([w for r in runs for w in r.approve_waits]),
        time_to_remediate=distribution(remediate),
        approvals=approvals,
        auto_approved=auto,
        auto_approved_share=round(auto / approvals, 4) if approvals else None,
        refusals=sum(r.refusals for r in runs),
    )


def distribution(values: list[float]) -> Distribution:
    if not values:
        return Distribution(count=0, median_seconds=None, p90_seconds=None)
    ordered = sorted(values)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
    return Distribution(
        count=len(ordered),
        median_seconds=round(statistics.median(ordered), 3),
        p90_seconds=round(p90, 3),
    )
