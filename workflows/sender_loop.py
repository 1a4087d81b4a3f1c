"""Closing the loop with whoever sent the alert: a run keeps the conversation where it began.

- Slack (a Slack app): the run's first gate message is its thread. Once a gate is decided its
  message is updated in place (buttons gone), and the run's later notifications are replies.
- PagerDuty: a run started from an incident notes each gate, decision, action and
  verification on it (activities/notify/send.py), and resolves it once the remediation is
  verified.
- Alertmanager: while the run acts on its alert's target, a silence of that alert holds;
  the run expires it when it ends, whatever the outcome, and extends it while it lives (it
  lasts `[silences] ends_after`), so that a run terminated from outside stops silencing its
  alert within that time (SILENCE_EXTEND_PATCH).

All of it is best effort: a sender that is down is a line in the audit trail, never a reason
to stop a remediation. Runs recorded before this (no SENDER_LOOP_PATCH marker) replay without
the new activities; the patch is decided once, when the run starts.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.alertmanager.models import (
        CreateSilenceInput,
        ExpireSilenceInput,
        ExtendSilenceInput,
    )
    from activities.alertmanager.silences import create_silence, expire_silence, extend_silence
    from activities.notify.models import Notification, NotifyResult, SlackMessageRef
    from activities.pagerduty.incidents import resolve_incident
    from activities.pagerduty.models import ResolveIncidentInput
    from workflows.audit import AuditTrail
    from workflows.models import AlertContext
    from workflows.policies import HEARTBEAT_TIMEOUT, NOTIFY_RETRY, NOTIFY_TIMEOUT

SENDER_LOOP_PATCH = "sender-loop-v1"
# Runs from before silences were extended made them last `ends_after` (6 h then) at once.
SILENCE_EXTEND_PATCH = "silence-extended-v1"
MIN_EXTEND_EVERY = timedelta(seconds=1)


class SenderLoop:
    def __init__(self, runbook: str, alert: AlertContext | None, audit: AuditTrail) -> None:
        self.runbook = runbook
        self.alert = alert
        self.audit = audit
        self.enabled = False
        # The run's first gate message (its thread) and the open gate's own message.
        self.slack_thread: SlackMessageRef | None = None
        self.slack_gate_message: SlackMessageRef | None = None
        self.silence_id: str | None = None
        # Extends the silence every third of its length while the run holds it.
        self.extender: asyncio.Task[None] | None = None
        # Audit steps already told as progress (see `actions_to_tell`).
        self.told = 0

    def begin(self) -> None:
        self.enabled = workflow.patched(SENDER_LOOP_PATCH)

    @property
    def pagerduty_incident(self) -> str | None:
        """The incident that started the run (the intake's fingerprint is its id)."""
        alert = self.alert
        if alert is None or alert.source != "pagerduty" or not alert.fingerprint:
            return None
        return alert.fingerprint

    # -- notifications -----------------------------------------------------------------

    def address(self, note: Notification) -> Notification:
        """Where `note` belongs: the run's incident and thread; a decision, its gate's message."""
        if not self.enabled:
            return note
        gate_message = self.slack_gate_message if note.event == "gate_decided" else None
        return note.model_copy(
            update={
                "pagerduty_incident": self.pagerduty_incident,
                "slack_thread": self.slack_thread,
                "slack_gate_message": gate_message,
            }
        )

    def sent(self, note: Notification, result: NotifyResult) -> None:
        """Keep the gate message a Slack app posted: the thread of the run, and the message
        its decision updates."""
        if not self.enabled or result.slack_message is None:
            return
        if note.event == "gate_opened":
            self.slack_gate_message = result.slack_message
            self.slack_thread = self.slack_thread or result.slack_message
        elif note.event == "gate_decided":
            self.slack_gate_message = None

    def actions_to_tell(self) -> list[str]:
        """What the run did since it last told (its `action` audit steps)."""
        steps = self.audit.steps[self.told :]
        self.told = len(self.audit.steps)
        return [s.summary for s in steps if s.kind == "action"]

    # -- the alert's silence -----------------------------------------------------------

    async def silence(self) -> None:
        """Before acting: silence the Alertmanager alert that started the run (once)."""
        alert = self.alert
        if not self.enabled or self.silence_id is not None:
            return
        if alert is None or alert.source != "alertmanager" or not alert.labels:
            return
        info = workflow.info()
        try:
            result = await workflow.execute_activity(
                create_silence,
                CreateSilenceInput(
                    workflow_id=info.workflow_id,
                    run_id=info.run_id,
                    runbook=self.runbook,
                    labels=alert.labels,
                ),
                start_to_close_timeout=NOTIFY_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=NOTIFY_RETRY,
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            self.audit.record("silence_failed", f"could not silence the alert: {err.cause}")
            return
        if result.silence_id is None:
            return  # no [silences] section
        self.silence_id = result.silence_id
        matched = ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
        self.audit.record(
            "alert_silenced",
            f"Alertmanager silence {result.silence_id} holds {alert.name or 'the alert'} "
            f"({matched}) while the run acts",
            silence_id=result.silence_id,
        )
        if result.ends_after_seconds > 0 and workflow.patched(SILENCE_EXTEND_PATCH):
            every = timedelta(seconds=result.ends_after_seconds / 3)
            self.extender = asyncio.create_task(self._extend(max(every, MIN_EXTEND_EVERY)))

    async def _extend(self, every: timedelta) -> None:
        """While the run holds its silence: every `every`, move its end further away."""
        while self.silence_id is not None:
            await workflow.sleep(every)
            silence_id = self.silence_id
            if silence_id is None:
                return
            try:
                result = await workflow.execute_activity(
                    extend_silence,
                    ExtendSilenceInput(silence_id=silence_id),
                    start_to_close_timeout=NOTIFY_TIMEOUT,
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=NOTIFY_RETRY,
                )
            except ActivityError as err:
                if is_cancelled_exception(err):
                    return
                self.audit.record(
                    "silence_extend_failed",
                    f"could not extend Alertmanager silence {silence_id} ({err.cause}); the "
                    "run tries again, and it ends at its end time if it cannot",
                )
                continue
            if not result.configured:
                return
            if result.silence_id is None:
                self.silence_id = None
                self.audit.record(
                    "silence_over",
                    f"Alertmanager silence {silence_id} is over (expired by a person, or it "
                    "lapsed); the run does not silence the alert again",
                )
                return
            self.silence_id = result.silence_id

    async def unsilence(self) -> None:
        """When the run ends, however it ends: expire its silence (if it made one)."""
        extender, self.extender = self.extender, None
        if extender is not None and not extender.done():
            extender.cancel()
            await asyncio.gather(extender, return_exceptions=True)
        silence_id = self.silence_id
        if silence_id is None:
            return
        try:
            await workflow.execute_activity(
                expire_silence,
                ExpireSilenceInput(silence_id=silence_id),
                start_to_close_timeout=NOTIFY_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=NOTIFY_RETRY,
            )
        except ActivityError as err:
            self.audit.record(
                "silence_expiry_failed",
                f"could not expire Alertmanager silence {silence_id} ({err.cause}); it ends "
                "by itself at its end time, or expire it with `amtool silence expire`",
            )
            return
        self.silence_id = None
        self.audit.record("silence_expired", f"Alertmanager silence {silence_id} expired")

    # -- the PagerDuty incident --------------------------------------------------------

    async def resolve_incident(self, summary: str) -> None:
        """After a verified remediation: resolve the PagerDuty incident that started it."""
        incident = self.pagerduty_incident
        if not self.enabled or incident is None:
            return
        try:
            result = await workflow.execute_activity(
                resolve_incident,
                ResolveIncidentInput(
                    incident_id=incident, workflow_id=workflow.info().workflow_id, summary=summary
                ),
                start_to_close_timeout=NOTIFY_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=NOTIFY_RETRY,
            )
        except ActivityError as err:
            self.audit.record(
                "incident_resolve_failed",
                f"could not resolve PagerDuty incident {incident}: {err.cause}",
            )
            return
        if result.resolved:
            self.audit.record("incident_resolved", f"PagerDuty incident {incident} resolved")
        elif result.already_resolved:
            self.audit.record(
                "incident_resolved", f"PagerDuty incident {incident} was already resolved"
            )
