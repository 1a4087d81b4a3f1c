"""The incident record's contracts: what `remediate report --format json`, GET
/runs/{id}/report?format=json and the run page get. Built by `workflows/incident_record.py`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from workflows.models import AlertContext, DecisionOutcome, RunStatus


class TimelineEntry(BaseModel):
    at: datetime
    # alert_fired, started, plan, gate_opened, decision, action, verification, finished, ...
    kind: str
    event: str
    actor: str = "engine"


class DecisionEntry(BaseModel):
    """One way a gate closed (or counted an approval), with the plan it was about."""

    at: datetime
    gate: int
    plan_id: str
    plan: str
    outcome: DecisionOutcome
    decided_by: str
    approvers: list[str] = Field(default_factory=list)
    by_policy: str | None = None
    reason: str = ""
    # From the gate's opening to this decision; None when no gate waited (a policy, a dry
    # run, an alert resolved before the plan was put to anyone).
    waited_seconds: float | None = None


class Refusal(BaseModel):
    """Something refused on the way: a decision the gate did not accept, an auto-approval a
    policy declined, an approved plan the engine did not act on."""

    at: datetime
    kind: str
    actor: str
    summary: str


class DataLossWindow(BaseModel):
    """A restore's data-loss window: writes between the backup and the moment writes
    stopped are not in the restored database (they are in the safety snapshot)."""

    backup: str
    backup_taken_at: datetime
    writes_stopped_at: datetime | None
    seconds: int
    # The restored database was switched in and kept: the window's writes left the live
    # database. False: planned, but the live database was not replaced (or switched back).
    applied: bool
    safety_snapshot: str = ""


class Impact(BaseModel):
    # The outage as observed: from the alert's start (or the run's detection) to the
    # verified fix (or the alert's resolution); None where the run does not know.
    outage_started_at: datetime | None = None
    outage_start_from: str = ""
    outage_ended_at: datetime | None = None
    outage_seconds: float | None = None
    observed: str
    affected: list[str] = Field(default_factory=list)
    data_loss: DataLossWindow | None = None


class IncidentRecord(BaseModel):
    """One run's incident record. The JSON form is this model (`model_dump(mode="json")`)."""

    workflow_id: str
    runbook: str
    target: str
    title: str
    status: RunStatus
    outcome: str
    severity: str
    severity_from: Literal["alert", "outcome"]
    dry_run: bool
    requested_by: str
    reason: str = ""
    alert: AlertContext | None = None
    started_at: datetime
    finished_at: datetime | None = None
    participants: list[str] = Field(default_factory=list)
    summary: str
    timeline: list[TimelineEntry]
    impact: Impact
    root_cause: list[str]
    resolution: list[str]
    decisions: list[DecisionEntry]
    refusals: list[Refusal]
    follow_ups: list[str]
    run_page: str | None = None
