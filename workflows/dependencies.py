"""Waiting for a dependency's remediation: a target that `depends_on` another (web on
orders-db) may be down only because the other is. While a remediation holds the dependency's
lease in the safety envelope, or ended less than `[safety] dependency_settle_seconds` ago, a
runbook on the dependent waits (durable timers, at most its gate's `abort_after`) and then
diagnoses again, instead of acting on a symptom (issue 13, scenario 2).

Runbooks call `wait_for_dependencies` after diagnosis and before planning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.safety import OpenRunsQuery, SafetyActivities, SafetyQuery
    from activities.targets import TargetDescription
    from workflows.models import RunStatus
    from workflows.policies import HEARTBEAT_TIMEOUT, READ_RETRY

if TYPE_CHECKING:
    from workflows.runbook import RunbookWorkflow

# Runs that diagnosed before targets had dependencies replay without asking the envelope.
DEPENDENCY_PATCH = "dependency-wait-v1"
# ...and before they waited for a dependency's run still at its gate, and looked again
# before acting.
OPEN_RUNS_PATCH = "dependency-open-runs-v1"
MILESTONE = "waiting_for_dependency"
FIRST_POLL, LONGEST_POLL = timedelta(seconds=2), timedelta(seconds=60)


class Waited(StrEnum):
    CLEAR = "clear"  # no dependency busy: go on
    WAITED = "waited"  # waited for one: diagnose again before planning
    GAVE_UP = "gave_up"  # still busy at the deadline: `detail` says which; escalate


@dataclass
class DependencyWait:
    outcome: Waited
    detail: str = ""


@dataclass
class _Watch:
    """What the waiting run saw of each dependency: when a lease it had seen held was found
    released (the envelope keeps only when leases were taken)."""

    freed_at: dict[str, datetime] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)
    said: set[str] = field(default_factory=set)


async def wait_for_dependencies(run: RunbookWorkflow, target: TargetDescription) -> DependencyWait:
    if not target.depends_on or not workflow.patched(DEPENDENCY_PATCH):
        return DependencyWait(Waited.CLEAR)
    settle = timedelta(seconds=target.dependency_settle_seconds)
    watch, poll, waited = _Watch(), FIRST_POLL, False
    while True:
        busy, settled_at = await _busy(run, target.depends_on, settle, watch)
        if not busy:
            if waited:
                run.audit.record(
                    "dependency_clear",
                    f"{', '.join(target.depends_on)}: no remediation active or settling; "
                    f"diagnosing {target.target} again",
                )
                return DependencyWait(Waited.WAITED)
            return DependencyWait(Waited.CLEAR)
        waited = True
        run.mark(MILESTONE)
        for line in busy:
            if line not in watch.said:
                run.audit.record("dependency_wait", line)
                watch.said.add(line)
        if run.summary != busy[0]:
            run.set_status(RunStatus.WAITING, busy[0])
        now = workflow.now()
        deadline = run.timeline[MILESTONE] + run.gate.settings.abort_after
        if now >= deadline:
            minutes = (now - run.timeline[MILESTONE]).total_seconds() / 60
            return DependencyWait(Waited.GAVE_UP, f"{busy[0]} (waited {minutes:.0f} min)")
        # Coarse timers: until the settling ends, or a growing poll while a lease is held.
        step = min(poll, deadline - now)
        if settled_at is not None:
            step = min(step, max(settled_at - now, timedelta(seconds=1)))
        await workflow.sleep(step)
        poll = min(poll * 2, LONGEST_POLL)


async def _busy(
    run: RunbookWorkflow, depends_on: list[str], settle: timedelta, watch: _Watch
) -> tuple[list[str], datetime | None]:
    """Why the run must wait (one line per busy dependency), and the latest time a
    dependency settles, when any is settling rather than held."""
    now, lines, settles = workflow.now(), [], []
    for needed in depends_on:
        status = await workflow.execute_activity_method(
            SafetyActivities.safety_status,
            SafetyQuery(target=needed, runbook=run.runbook),
            start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=READ_RETRY,
        )
        if status.holder is not None:
            watch.held.add(needed)
            lines.append(f"waiting for {needed}'s remediation ({status.holder}) to finish")
            continue
        if workflow.patched(OPEN_RUNS_PATCH):
            # A remediation waiting at its gate holds no lease yet; it is one all the same.
            open_runs = await workflow.execute_activity_method(
                SafetyActivities.open_runs,
                OpenRunsQuery(target=needed, exclude=workflow.info().workflow_id),
                start_to_close_timeout=timedelta(seconds=30),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=READ_RETRY,
            )
            if open_runs:
                lines.append(
                    f"waiting for {needed}'s remediation ({', '.join(open_runs)}) to finish; "
                    "it has not acted yet"
                )
                continue
        if needed in watch.held:
            watch.freed_at.setdefault(needed, now)
        # The envelope's record (when a remediation ended, or began if it never released)
        # and when this run saw a lease it had watched go.
        recorded, seen_free = status.last_action_at, watch.freed_at.get(needed)
        since = max((t for t in (recorded, seen_free) if t is not None), default=None)
        if since is not None and now < since + settle:
            settles.append(since + settle)
            lines.append(
                f"a remediation of {needed} ended at {since:%H:%M:%S} UTC; waiting until "
                f"{since + settle:%H:%M:%S} UTC for its effect to settle"
            )
    return lines, max(settles) if settles else None
