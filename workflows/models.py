"""Pydantic contracts shared by every runbook: one model in, one model out.

These models cross the workflow boundary, so they hold names and references only, never a
secret value.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    computed_field,
    field_validator,
    model_validator,
)


class RunStatus(StrEnum):
    """The status a run shows in search attributes and `remediate status`."""

    DIAGNOSING = "Diagnosing"
    PLANNING = "Planning"
    AWAITING_APPROVAL = "AwaitingApproval"
    WAITING = "WaitingForSafety"
    ACTING = "Acting"
    VERIFYING = "Verifying"
    HOLDING = "HoldingReadOnly"
    NO_ACTION_NEEDED = "NoActionNeeded"
    REMEDIATED = "Remediated"
    DRY_RUN = "DryRunComplete"
    REJECTED = "Rejected"
    RESOLVED = "ResolvedBeforeApproval"
    ABORTED = "Aborted"
    ESCALATED = "Escalated"
    # The kill switch stopped it at a step boundary; the report says what state it left.
    STOPPED = "StoppedByKillSwitch"
    CANCELLED = "Cancelled"


class AlertContext(BaseModel):
    """What the alert said, when a run was started by one."""

    source: str = "manual"
    name: str = ""
    fingerprint: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str = ""
    # When the sender says the problem began (Alertmanager's and Grafana's `startsAt`, a
    # PagerDuty incident's `created_at`); None from senders that do not say, and in runs
    # recorded before alerts carried it.
    starts_at: datetime | None = None

    @field_validator("starts_at")
    @classmethod
    def _utc_or_unknown(cls, value: datetime | None) -> datetime | None:
        if value is None or value.year == 1:
            return None  # Go's zero time: Alertmanager's way of saying "not set"
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class AlertSignal(BaseModel):
    """An alert delivered to a running remediation: a duplicate firing, or its resolution."""

    status: Literal["firing", "resolved"]
    alert: AlertContext
    received_at: datetime
    # The intake batches duplicates of a firing alert into one signal: how many it carries,
    # received between `first_received_at` and `received_at` (the last). Defaults: one alert.
    count: int = 1
    first_received_at: datetime | None = None


class RunbookInput(BaseModel):
    """Every runbook's input: small enough to paste into the Temporal UI's Start Workflow."""

    target: str
    requested_by: str
    dry_run: bool = False
    reason: str = ""
    alert: AlertContext | None = None
    parameters: dict[str, str] = Field(default_factory=dict)
    # When the alert that started the run resolves while a gate waits: close the gate and
    # end the run with nothing done (the route decides; manual runs keep waiting).
    close_gate_on_resolve: bool = False
    # The requester's identity as the approval service signed it (a start token bound to this
    # input). Without it (a start from the Temporal UI or the raw API) `requested_by` is only
    # a claim, and the run's destructive gates need two distinct approvers.
    requester_token: str = ""
    # Set by a parent runbook for its child: trusted only when the run really is a child
    # (Temporal sets the parent; a client cannot).
    parent_verified: bool = False

    def input_hash(self) -> str:
        """What a start token binds: everything in the input but the token itself."""
        body = self.model_dump(mode="json", exclude={"requester_token"})
        if body["alert"] is not None and body["alert"]["starts_at"] is None:
            # Inputs from before alerts carried a start keep the hash their token was bound to.
            del body["alert"]["starts_at"]
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class Effect(BaseModel):
    """One thing a plan changes, and whether (and how) it can be put back."""

    what: str
    undoable: bool
    undo: str = ""

    def describe(self) -> str:
        return f"{self.what} ({'undo: ' + self.undo if self.undoable else 'CANNOT be undone'})"


class ExpectedImpact(BaseModel):
    """What a plan touches, in numbers a policy can compare against its limits."""

    summary: str
    affected: int
    share_of_total: float | None = None
    reversible: bool = False
    # The action replaces the target as a whole (a deployment switch): there is no population
    # to take a share of, so a policy judges it by `affected` alone; it still has to name the
    # action. Otherwise an unknown share counts as 100% against the blast-radius limit.
    whole_target: bool = False
    # Every effect the plan has, in order. When listed, `reversible` is whether all of them
    # can be undone, whatever the runbook said.
    effects: list[Effect] = Field(default_factory=list)

    @model_validator(mode="after")
    def _reversible_only_if_every_effect_is(self) -> ExpectedImpact:
        if self.effects:
            self.reversible = all(e.undoable for e in self.effects)
        return self


class Plan(BaseModel):
    """The exact destructive action a person (or a policy) approves."""

    model_config = ConfigDict(frozen=True)

    runbook: str
    action: str
    target: str
    parameters: dict[str, Any]
    expected_impact: ExpectedImpact

    @computed_field  # type: ignore[prop-decorator]
    @property
    def plan_id(self) -> str:
        """A hash of everything else: approving a plan id approves exactly this plan.

        Fields at their default are left out, so adding a field (with a default) to a plan
        does not change the id of plans that do not use it: an approval minted for a gate
        that was open across a deploy of the new worker still matches."""
        body = self.model_dump(mode="json", exclude={"plan_id"}, exclude_defaults=True)
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def describe(self) -> str:
        return f"{self.action} on {self.target}: {self.expected_impact.summary}"


class DecisionOutcome(StrEnum):
    # One of several approvals a quorum needs: the gate stays open.
    COUNTED = "counted"
    APPROVED = "approved"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    RESOLVED = "resolved"
    DRY_RUN = "dry_run"
    # The run diagnosed again and the plan no longer fits: a new plan, a new gate.
    SUPERSEDED = "superseded"


class ApprovalDecision(BaseModel):
    """How a gate closed: by whom (or which policy), for which plan, when."""

    outcome: DecisionOutcome
    plan_id: str
    decided_by: str
    decided_at: datetime
    reason: str = ""
    by_policy: str | None = None
    # Which opening of a gate in the run (from 1; 0 in runs recorded before gates counted).
    gate: int = 0
    # Every identity whose approval counted (a quorum has several).
    approvers: list[str] = Field(default_factory=list)

    @property
    def approved(self) -> bool:
        return self.outcome == DecisionOutcome.APPROVED


# A plan that touches more than this share of a system never passes a policy unattended,
# whatever the configuration says (DESIGN.md: blast-radius limit).
HARD_BLAST_RADIUS = 0.5


class StepRecord(BaseModel):
    """One line of the audit trail."""

    at: datetime
    kind: str
    summary: str
    actor: str = "engine"
    details: dict[str, Any] = Field(default_factory=dict)


class GateView(BaseModel):
    """The open gate, as `remediate pending` shows it."""

    workflow_id: str
    runbook: str
    target: str
    requested_by: str
    required_group: str
    plan: Plan
    opened_at: datetime
    abort_at: datetime
    # What a decision must be bound to: this run and this opening of its gate.
    run_id: str = ""
    gate: int = 0
    approvals_required: int = 1
    approved_by: list[str] = Field(default_factory=list)
    requester_verified: bool = True

    def approvals_text(self) -> str:
        return f"{len(self.approved_by)} of {self.approvals_required} approvals" + (
            f" ({', '.join(self.approved_by)})" if self.approved_by else ""
        )


class RunReport(BaseModel):
    """The final (or current) record of a run."""

    workflow_id: str
    runbook: str
    target: str
    requested_by: str
    dry_run: bool
    status: RunStatus
    summary: str
    steps: list[StepRecord]
    decisions: list[ApprovalDecision] = Field(default_factory=list)
    started_at: datetime
    finished_at: datetime | None = None
    # Milestones a runbook marks (e.g. detected, approved, rolled_back, verified).
    timeline: dict[str, datetime] = Field(default_factory=dict)
    # Firing alerts delivered to the run, the one that started it included.
    alerts_attached: int = 0
