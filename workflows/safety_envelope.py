"""The safety envelope: one long-lived workflow per deployment that every runbook consults.

- One destructive remediation per target at a time, across all runbooks (a lease, taken
  after approval and released when the run ends; a run that died frees it after a TTL).
- Per target and runbook: a cooldown after each action and an hourly budget. Outside them
  nothing passes a gate unattended: a lead must approve, and is paged.
- A global kill switch: while paused no run acts; alerts are still taken and recorded.

Durable in Temporal; it continues as new when its history grows.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.safety import (
        LeaseRelease,
        LeaseRequest,
        LeaseResult,
        PauseRequest,
        SafetyQuery,
        SafetyStatus,
    )

HOUR = timedelta(hours=1)


class Lease(BaseModel):
    holder: str
    runbook: str
    plan_id: str
    acquired_at: datetime
    expires_at: datetime


class ActionRecord(BaseModel):
    target: str
    runbook: str
    at: datetime
    cooldown_until: datetime


class EnvelopeState(BaseModel):
    paused: bool = False
    paused_by: str = ""
    pause_reason: str = ""
    leases: dict[str, Lease] = Field(default_factory=dict)
    actions: list[ActionRecord] = Field(default_factory=list)


@workflow.defn(name="SafetyEnvelopeWorkflow")
class SafetyEnvelopeWorkflow:
    @workflow.init
    def __init__(self, state: EnvelopeState | None = None) -> None:
        self.state = state or EnvelopeState()

    @workflow.run
    async def run(self, state: EnvelopeState | None = None) -> None:
        await workflow.wait_condition(
            lambda: (
                workflow.info().is_continue_as_new_suggested() and workflow.all_handlers_finished()
            )
        )
        workflow.continue_as_new(self.state)

    def _prune(self) -> datetime:
        now = workflow.now()
        leases = self.state.leases.items()
        self.state.leases = {t: lease for t, lease in leases if lease.expires_at > now}
        self.state.actions = [a for a in self.state.actions if now - a.at < HOUR]
        return now

    @workflow.update
    def acquire(self, request: LeaseRequest) -> LeaseResult:
        now = self._prune()
        if self.state.paused:
            reason = f"paused by {self.state.paused_by}: {self.state.pause_reason}".rstrip(": ")
            return LeaseResult(granted=False, reason=reason)
        lease = self.state.leases.get(request.target)
        if lease is not None and lease.holder != request.holder:
            return LeaseResult(
                granted=False,
                reason=f"{request.target} is being remediated by {lease.holder} ({lease.runbook})",
            )
        if lease is None:
            limits = request.limits
            self.state.leases[request.target] = Lease(
                holder=request.holder,
                runbook=request.runbook,
                plan_id=request.plan_id,
                acquired_at=now,
                expires_at=now + timedelta(seconds=limits.lease_ttl_seconds),
            )
            self.state.actions.append(
                ActionRecord(
                    target=request.target,
                    runbook=request.runbook,
                    at=now,
                    cooldown_until=now + timedelta(seconds=limits.cooldown_seconds),
                )
            )
        return LeaseResult(granted=True)

    @workflow.update
    def release(self, release: LeaseRelease) -> None:
        lease = self.state.leases.get(release.target)
        if lease is not None and lease.holder == release.holder:
            del self.state.leases[release.target]

    @workflow.update
    def pause(self, request: PauseRequest) -> SafetyStatus:
        if not request.by:
            raise ApplicationError("a pause must say who paused")
        self.state.paused, self.state.paused_by = True, request.by
        self.state.pause_reason = request.reason
        return self._status(None)

    @workflow.update
    def resume(self, request: PauseRequest) -> SafetyStatus:
        self.state.paused, self.state.paused_by, self.state.pause_reason = False, "", ""
        return self._status(None)

    @workflow.query
    def status(self, query: SafetyQuery) -> SafetyStatus:
        return self._status(query)

    def _status(self, query: SafetyQuery | None) -> SafetyStatus:
        now = workflow.now()
        status = SafetyStatus(
            paused=self.state.paused,
            paused_by=self.state.paused_by,
            pause_reason=self.state.pause_reason,
        )
        if query is None:
            return status
        lease = self.state.leases.get(query.target)
        mine = [
            a
            for a in self.state.actions
            if a.target == query.target and a.runbook == query.runbook and now - a.at < HOUR
        ]
        cooling = [a.cooldown_until for a in mine if a.cooldown_until > now]
        return status.model_copy(
            update={
                "holder": lease.holder if lease and lease.expires_at > now else None,
                "actions_last_hour": len(mine),
                "hourly_budget": query.limits.hourly_budget,
                "cooldown_until": max(cooling) if cooling else None,
            }
        )
