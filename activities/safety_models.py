"""The safety envelope's status as it is asked for and shown (by the service, the CLI and the
runbooks): models only, so that what shows them need not import the envelope's activities."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from activities.config import SafetyLimits

SAFETY_WORKFLOW_TYPE = "SafetyEnvelopeWorkflow"


def safety_workflow_id(task_queue: str) -> str:
    """One envelope per deployment (task queue)."""
    return f"remediation-safety-{task_queue}"


class SafetyQuery(BaseModel):
    target: str
    runbook: str
    limits: SafetyLimits = Field(default_factory=SafetyLimits)
    # The asker's clock. A query runs on the envelope's last workflow task, whose time may be
    # long past: cooldowns, the hourly window and lease expiry are judged at this time.
    now: datetime | None = None


class SwitchRecord(BaseModel):
    """One line of the envelope's audit: who paused or resumed, or tried to, and why."""

    at: datetime
    kind: str  # "paused", "resumed", "refused"
    by: str
    reason: str = ""


class SafetyStatus(BaseModel):
    paused: bool
    paused_by: str = ""
    pause_reason: str = ""
    audit: list[SwitchRecord] = Field(default_factory=list)
    holder: str | None = None
    actions_last_hour: int = 0
    hourly_budget: int = 0
    cooldown_until: datetime | None = None
    # When a remediation of this target last ended (released its lease) or, if none has,
    # began (within the envelope's hour of actions): a dependent target waits for such a
    # remediation to settle.
    last_action_at: datetime | None = None

    def paused_text(self) -> str:
        """ "paused by alice: db migration", as the envelope says it."""
        by = f" by {self.paused_by}" if self.paused_by else ""
        why = f": {self.pause_reason}" if self.pause_reason else ""
        return f"paused{by}{why}"

    def auto_approval_blocked(self) -> str | None:
        if self.actions_last_hour >= self.hourly_budget:
            return f"hourly budget used ({self.actions_last_hour}/{self.hourly_budget})"
        if self.cooldown_until is not None:
            return f"in cooldown until {self.cooldown_until:%H:%M:%S}"
        return None
