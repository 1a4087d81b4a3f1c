"""What every runbook workflow shares: the gate's Updates, queries, status, notify, report.

A runbook subclasses `RunbookWorkflow`, sets `runbook`, and writes its `run` with the helpers
here. Temporal registers the inherited handlers on each subclass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, ClassVar

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from activities.approval_auth import DecisionRequest
    from activities.checks import (
        CheckSpec,
        VerifyInput,
        VerifyPolicy,
        VerifyResult,
        verify_until_stable,
    )
    from activities.notify.incident_record import post_incident_record
    from activities.notify.models import Notification, NotifyResult
    from activities.notify.send import notify
    from activities.safety import SafetyActivities, SafetyQuery, SafetyStatus
    from activities.targets import (
        DescribeTargetInput,
        GateSettings,
        TargetDescription,
        describe_target,
    )
    from workflows.approval_gate import (
        INCIDENT_PATCH,
        KEYS_RETRY,
        PLAN_REFRESH_PATCH,
        ApprovalGate,
        Replan,
    )
    from workflows.audit import AuditTrail
    from workflows.incident_markdown import render_markdown
    from workflows.incident_record import incident_record
    from workflows.models import (
        AlertSignal,
        ApprovalDecision,
        DecisionOutcome,
        Effect,
        GateView,
        Plan,
        RunbookInput,
        RunReport,
        RunStatus,
    )
    from workflows.names import SA_REQUESTED_BY, SA_RUNBOOK, SA_STATUS, SA_TARGET
    from workflows.policies import (
        HEARTBEAT_TIMEOUT,
        MAX_REPLANS,
        NOTIFY_RETRY,
        NOTIFY_TIMEOUT,
        READ_RETRY,
    )
    from workflows.sender_loop import SenderLoop
    from workflows.target_lease import KillSwitchStop, TargetLease

from workflows import gate_visibility, run_metrics

# Runs cancelled before pool_restart and rollback cleaned up after a cancel replay without it.
CANCEL_PATCH = "cancel-cleanup-v1"
# Plans of runs recorded before plans listed their effects have none (their ids must not
# change on replay).
PLAN_EFFECTS_PATCH = "plan-effects-v1"
# Runs that ended before the engine posted their incident record end without posting it.
INCIDENT_RECORD_PATCH = "incident-record-v1"
# A Slack message is cut into several beyond about 4,000 characters: the record posted is
# shortened to fit one (the whole record: `remediate report`, the run page).
RECORD_MESSAGE_CHARS = 3500


class BadInputError(Exception):
    """The run's parameters or the target cannot work; nothing was touched."""


class RunbookWorkflow:
    runbook: ClassVar[str]

    @workflow.init
    def __init__(self, params: RunbookInput) -> None:
        self.params = params
        self.audit = AuditTrail()
        self.status = RunStatus.DIAGNOSING
        self.summary = f"Diagnosing {params.target}"
        self.report_final: RunReport | None = None
        # The alert that starts a run arrives with it (signal-with-start) and counts as one.
        self.alerts_attached = 0
        self.timeline: dict[str, datetime] = {}
        # The run's incident: fingerprint -> "firing" | "resolved", of the alerts it serves.
        self.incident: dict[str, str] = {}
        # Plans re-made because the world moved between plan and act (bounded per runbook).
        self.replans = 0
        self.lease = TargetLease(params.target, self.runbook, self.audit, self.set_status)
        # The alert's senders: Slack thread, PagerDuty incident, Alertmanager silence.
        self.senders = SenderLoop(self.runbook, params.alert, self.audit)
        self.gate = ApprovalGate(
            params=params,
            audit=self.audit,
            set_status=self.set_status,
            notify=self.notify,
            publish=lambda: gate_visibility.publish(self.pending_gate()),
        )

    # -- queries and updates -------------------------------------------------------------

    @workflow.query
    def report(self) -> RunReport:
        return self.report_final or self._build_report()

    @workflow.query
    def pending_gate(self) -> GateView | None:
        plan, opened_at, abort_at = self.gate.open_plan, self.gate.opened_at, self.gate.abort_at()
        if plan is None or opened_at is None or abort_at is None:
            return None
        return GateView(
            workflow_id=workflow.info().workflow_id,
            runbook=self.runbook,
            target=self.params.target,
            requested_by=self.params.requested_by,
            required_group=self.gate.settings.required_group,
            plan=plan,
            opened_at=opened_at,
            abort_at=abort_at,
            run_id=workflow.info().run_id,
            gate=self.gate.instance,
            approvals_required=self.gate.approvals_required,
            approved_by=list(self.gate.approved_by),
            requester_verified=bool(self.gate.requester_verified),
        )

    @workflow.update
    async def approve(self, request: DecisionRequest) -> ApprovalDecision:
        return await self.gate.decide("approve", request, self._gate_settings)

    @approve.validator
    def _validate_approve(self, request: DecisionRequest) -> None:
        self.gate.validate("approve", request)

    @workflow.update
    async def reject(self, request: DecisionRequest) -> ApprovalDecision:
        return await self.gate.decide("reject", request, self._gate_settings)

    @reject.validator
    def _validate_reject(self, request: DecisionRequest) -> None:
        self.gate.validate("reject", request)

    async def _gate_settings(self) -> GateSettings:
        """The gate's policy and keys, for a decision that arrives before the run described
        its target (or in a run started before gates verified decisions themselves)."""
        target = await workflow.execute_activity(
            describe_target,
            DescribeTargetInput(runbook=self.runbook, target=self.params.target),
            start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=KEYS_RETRY,
        )
        return target.gate

    @workflow.signal
    def alert_received(self, signal: AlertSignal) -> None:
        """The run's incident: the alerts (by fingerprint) it serves. Duplicates attach here
        instead of starting another run. When every alert it serves has resolved, a waiting
        gate closes and an approved plan stops before acting (where the route says so); a
        re-fire reopens the question. Another alert's resolution routed here changes nothing."""
        alert = signal.alert
        if signal.status == "firing":
            repeats = signal.count if self.alerts_attached else signal.count - 1
            self.alerts_attached += signal.count
            was = self.incident.get(alert.fingerprint)
            self.incident[alert.fingerprint] = "firing"
            if was == "resolved":
                self.audit.record(
                    "alert_refired",
                    f"{alert.source} alert {alert.name or alert.fingerprint} fired again after "
                    "resolving; the run goes on",
                    actor=alert.source,
                    fingerprint=alert.fingerprint,
                )
                self.gate.resolved_by = None
            elif repeats > 0:
                self._record_duplicates(signal, repeats)
            return
        if alert.fingerprint not in self.incident:
            self.audit.record(
                "alert_resolved_elsewhere",
                f"{alert.source} alert {alert.name or alert.fingerprint} resolved; it is not "
                "one this run serves, so nothing changes",
                actor=alert.source,
                fingerprint=alert.fingerprint,
            )
            return
        self.incident[alert.fingerprint] = "resolved"
        self.audit.record(
            "alert_resolved",
            f"{alert.source} alert {alert.name or alert.fingerprint} resolved",
            actor=alert.source,
            fingerprint=alert.fingerprint,
        )
        all_resolved = all(state == "resolved" for state in self.incident.values())
        if self.params.close_gate_on_resolve and all_resolved and self.gate.resolved_by is None:
            self.gate.resolved_by = f"alert:{alert.source}"

    # -- helpers for runbooks ------------------------------------------------------------

    async def describe_target(self) -> TargetDescription:
        """The target as this runbook sees it (no secrets), and its gate's policy."""
        target = await workflow.execute_activity(
            describe_target,
            DescribeTargetInput(runbook=self.runbook, target=self.params.target),
            start_to_close_timeout=timedelta(minutes=2),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=READ_RETRY,
        )
        self.gate.configure(target.gate)
        return target

    @staticmethod
    def effects(*listed: Effect) -> list[Effect]:
        """A plan's effects, each with whether it can be undone (see PLAN_EFFECTS_PATCH)."""
        return list(listed) if workflow.patched(PLAN_EFFECTS_PATCH) else []

    def set_status(self, status: RunStatus, summary: str) -> None:
        self.status, self.summary = status, summary
        workflow.upsert_search_attributes([SA_STATUS.value_set(status.value)])
        workflow.set_current_details(summary)

    def mark(self, milestone: str, at: datetime | None = None) -> None:
        """A timeline entry for the report (first occurrence wins)."""
        self.timeline.setdefault(milestone, at or workflow.now())

    def start(self) -> None:
        self.senders.begin()
        workflow.upsert_search_attributes(
            [
                SA_RUNBOOK.value_set(self.runbook),
                SA_TARGET.value_set(self.params.target),
                SA_REQUESTED_BY.value_set(self.params.requested_by),
            ]
        )
        self.audit.record(
            "started",
            f"{self.runbook} on {self.params.target} requested by {self.params.requested_by}"
            + (" (dry run)" if self.params.dry_run else ""),
            actor=self.params.requested_by,
            reason=self.params.reason,
            alert=self.params.alert.model_dump(mode="json") if self.params.alert else None,
        )
        self.set_status(RunStatus.DIAGNOSING, f"Diagnosing {self.params.target}")
        alert = self.params.alert
        run_metrics.run_started(self.runbook, alert.source if alert else "manual")

    async def notify(
        self, event: str, severity: str, message: str, **details: Any
    ) -> NotifyResult | None:
        """Best effort: a notification channel that is down must not stop a remediation or
        a gate's timeouts; the failure is in the audit trail (and the worker's log). Goes
        where the run's conversation is (its Slack thread, its PagerDuty incident)."""
        return await self._send(notify, event, severity, message, details)

    async def _send(
        self,
        activity: Callable[[Notification], Awaitable[NotifyResult]],
        event: str,
        severity: str,
        message: str,
        details: dict[str, Any],
    ) -> NotifyResult | None:
        note = self.senders.address(
            Notification(
                event=event,
                severity=severity,
                workflow_id=workflow.info().workflow_id,
                runbook=self.runbook,
                target=self.params.target,
                message=message,
                details=details,
            )
        )
        try:
            result = await workflow.execute_activity(
                activity,
                note,
                start_to_close_timeout=NOTIFY_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=NOTIFY_RETRY,
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise  # the run is being cancelled: that is not a notification failure
            self.audit.record(
                "notification_failed", f"{event} ({severity}) could not be sent: {err.cause}"
            )
            return None
        self.senders.sent(note, result)
        return result

    async def _post_incident_record(self, report: RunReport) -> None:
        """The run's incident record, to where its notifications go (Slack: the run's
        thread), shortened to one chat message. Once the run has ended nothing stops its
        result: a failure to post, or a cancellation arriving now, is only noted."""
        record = incident_record(report)
        quiet = report.status in (RunStatus.REMEDIATED, RunStatus.NO_ACTION_NEEDED)
        try:
            await self._send(
                post_incident_record,
                "incident_record",
                "info" if quiet else "warning",
                render_markdown(record, RECORD_MESSAGE_CHARS),
                {
                    "status": report.status.value,
                    "severity": record.severity,
                    "follow_ups": record.follow_ups,
                },
            )
        except (ActivityError, asyncio.CancelledError) as err:
            self.audit.record("notification_failed", f"incident_record could not be sent: {err}")

    async def verify(self, checks: list[CheckSpec], policy: VerifyPolicy) -> VerifyResult:
        acted = self.senders.actions_to_tell() if self.senders.enabled else []
        if acted:
            await self.notify("acted", "info", "acted: " + "; ".join(acted))
        self.set_status(
            RunStatus.VERIFYING,
            "Verifying: " + "; ".join(c.describe() for c in checks),
        )
        params = VerifyInput(
            checks=checks,
            required_consecutive=policy.verify_consecutive,
            interval_seconds=policy.verify_interval_seconds,
            deadline_seconds=policy.verify_deadline_seconds,
        )
        result = await workflow.execute_activity(
            verify_until_stable,
            params,
            start_to_close_timeout=timedelta(seconds=params.deadline_seconds + 60),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=READ_RETRY,
        )
        outcome = "passed" if result.passed else "failed"
        self.audit.record(
            f"verification_{outcome}",
            f"verification {outcome} after {result.attempts} attempts in "
            f"{result.elapsed_seconds:.0f}s ({result.consecutive} consecutive passes)",
            observations=[o.model_dump() for o in result.last],
        )
        if self.senders.enabled:
            failing = "; ".join(f"{o.check}: {o.observed}" for o in result.last if not o.passed)
            await self.notify(
                f"verification_{outcome}",
                "info" if result.passed else "warning",
                f"verification {outcome} after {result.attempts} checks"
                + (f" ({failing})" if failing else ""),
            )
        return result

    async def safety_status(self) -> SafetyStatus:
        """The safety envelope's word on this run's target now: kill switch, cooldown, budget."""
        return await workflow.execute_activity_method(
            SafetyActivities.safety_status,
            SafetyQuery(target=self.params.target, runbook=self.runbook),
            start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=READ_RETRY,
        )

    async def approve_plan(self, plan: Plan, replan: Replan | None = None) -> ApprovalDecision:
        """The gate, inside the safety envelope: outside the cooldown and budget nothing is
        auto-approved; once approved, the run waits for the target's lease (one destructive
        remediation per target) and for the kill switch to be off. An approved plan that
        cannot get the lease before the gate's abort deadline is not acted on.

        With `replan` (the runbook's fresh look at the world): while the gate waits, and
        before acting on a plan older than `max_plan_age`, the run diagnoses again; a plan
        that no longer fits comes back SUPERSEDED (see `replanning`)."""
        if self.params.dry_run:
            return await self.gate.request(plan, dry_run=True)
        status = await self.safety_status()
        blocked = status.auto_approval_blocked()
        if blocked is not None and self.gate.settings.auto_approve is not None:
            self.gate.auto_approval_blocked = blocked
            await self.notify("safety_limit", "page", f"{blocked}: a lead must approve")
        decision = await self.gate.request(plan, dry_run=False, replan=replan)
        if decision.outcome != DecisionOutcome.APPROVED:
            return decision
        policy = decision.by_policy is not None  # decided as the plan was made
        opened = decision.decided_at if policy else (self.gate.opened_at or decision.decided_at)
        run_metrics.plan_approved(self.runbook, decision.decided_at - opened, policy)
        if not await self._acquire_lease(plan):
            return decision.model_copy(update={"outcome": DecisionOutcome.TIMED_OUT})
        if replan is not None and await self._stale(plan, replan):
            await self.release_lease(acted=False)
            return decision.model_copy(update={"outcome": DecisionOutcome.SUPERSEDED})
        if self.gate.resolved_by is not None and workflow.patched(INCIDENT_PATCH):
            # Approved (by a person or a policy), but the incident resolved meanwhile: the
            # plan no longer answers a live problem, so it is not acted on.
            self.audit.record(
                "approved_plan_dropped",
                f"the run's alerts resolved ({self.gate.resolved_by}) before plan "
                f"{plan.plan_id} was acted on; nothing was changed",
            )
            await self.release_lease(acted=False)
            return decision.model_copy(update={"outcome": DecisionOutcome.RESOLVED})
        # About to act: the alert that started the run pages nobody new meanwhile.
        await self.senders.silence()
        return decision

    async def _stale(self, plan: Plan, replan: Replan) -> bool:
        """An approved plan made (or last confirmed) longer than `max_plan_age` ago is
        diagnosed again before acting; True if it no longer fits."""
        made, limit = self.gate.confirmed_at, self.gate.settings.max_plan_age
        if made is None or limit is None or workflow.now() - made <= limit:
            return False
        if not workflow.patched(PLAN_REFRESH_PATCH):
            return False
        age = int((workflow.now() - made).total_seconds())
        why = await replan()
        if why is None:
            self.audit.record("plan_confirmed", f"plan {plan.plan_id} ({age}s old) still holds")
            return False
        self.audit.record(
            "approved_plan_stale",
            f"plan {plan.plan_id} was approved {age}s after it was made; diagnosed again: "
            f"{why}; not acted on",
        )
        return True

    def replanning(self, decision: ApprovalDecision) -> bool:
        """True when the gate's plan was superseded and the run should diagnose again and
        make a new plan (which needs a new decision); at most MAX_REPLANS times."""
        if decision.outcome != DecisionOutcome.SUPERSEDED or self.replans >= MAX_REPLANS:
            return False
        self.replans += 1
        return True

    async def _acquire_lease(self, plan: Plan) -> bool:
        return await self.lease.acquire(
            plan.plan_id, self.lease_also(), self.gate.settings.abort_after
        )

    def lease_also(self) -> list[str]:
        """Targets besides the run's own that its plan touches (leased with it)."""
        return []

    async def guard(self, step: str) -> None:
        """Before a destructive step that follows another: raises KillSwitchStop when the
        kill switch is on (or the lease was lost); the caller leaves the target consistent
        and ends the run with `stopped`."""
        await self.lease.guard(step)

    async def stopped(self, stop: KillSwitchStop, state: str) -> RunReport:
        """End a run the kill switch stopped at a step boundary, saying what state it left."""
        summary = f"stopped by the kill switch before {stop.step} ({stop.reason}). {state}"
        self.audit.record("kill_switch_stop", summary)
        await self.notify("kill_switch_stop", "page", summary)
        return await self.finish(RunStatus.STOPPED, summary)

    async def not_approved(self, outcome: DecisionOutcome, plan: Plan) -> RunReport:
        """End the run after a gate closed without approval: nothing was changed."""
        if outcome == DecisionOutcome.DRY_RUN:
            return await self.finish(RunStatus.DRY_RUN, f"dry run: would {plan.describe()}")
        if outcome == DecisionOutcome.REJECTED:
            return await self.finish(RunStatus.REJECTED, f"rejected: {plan.describe()} not done")
        if outcome == DecisionOutcome.RESOLVED:
            return await self.finish(
                RunStatus.RESOLVED, f"alert resolved before approval: {plan.describe()} not done"
            )
        if outcome == DecisionOutcome.SUPERSEDED:
            return await self.escalate(
                f"the plan kept changing while it waited ({self.replans} new plans); nothing "
                f"was changed; last plan: {plan.describe()}"
            )
        await self.notify("gate_timed_out", "page", f"not acted on: {plan.describe()}")
        return await self.finish(
            RunStatus.ABORTED,
            f"aborted: plan {plan.plan_id} was not acted on before its deadline (no approval, "
            "or no safe window); nothing changed",
        )

    async def escalate(self, reason: str) -> RunReport:
        await self.notify("escalation", "page", reason)
        self.audit.record("escalated", reason)
        return await self.finish(RunStatus.ESCALATED, reason)

    async def step_failed(
        self, err: ActivityError | ChildWorkflowError, what: str, after: str = ""
    ) -> RunReport:
        """End a run whose step failed for good: bad input (unknown target, broken config)
        aborts, nothing touched and nobody paged; anything else escalates, saying `what`
        failed with the cause and then `after` (the state the target is left in)."""
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.type == "ConfigError":
            return await self.finish(RunStatus.ABORTED, f"bad input: {cause.message}")
        message = cause.message if isinstance(cause, ApplicationError) else str(err)
        return await self.escalate(f"{what}: {message}{after}")

    async def release_lease(self, acted: bool = True) -> None:
        """Let other runbooks act on the target again (finish does this too). `acted=False`:
        the approved plan was dropped before acting (it does not count against the cooldown
        and the hourly budget)."""
        await self.lease.release(acted)

    async def cancelled(self, summary: str, severity: str = "page") -> None:
        """The end of a run cancelled mid-way: say what state it left, page, let the target go.
        The caller re-raises the cancellation afterwards."""
        self.audit.record("cancel_cleanup", summary)
        await self.notify(f"{self.runbook}_cancelled", severity, summary)
        await self.release_lease()
        await self.senders.unsilence()
        self.set_status(RunStatus.CANCELLED, summary)
        run_metrics.run_finished(self.runbook, RunStatus.CANCELLED.value, self._started, False)

    async def cancel_path(self, err: BaseException) -> bool:
        """For runbooks whose acts need no undoing: if `err` is this run's cancellation, clean
        up (`cancelled`) and return True, for the caller to re-raise it."""
        if not is_cancelled_exception(err) or not workflow.patched(CANCEL_PATCH):
            return False
        await self.cancelled(
            f"cancelled while {self.status.value} ({self.summary}); what was done stays done, "
            "nothing further is; the target's lease is released"
        )
        return True

    async def finish(self, status: RunStatus, summary: str) -> RunReport:
        await self.release_lease()
        await self.senders.unsilence()
        if status == RunStatus.REMEDIATED:
            await self.senders.resolve_incident(summary)
        self.set_status(status, summary)
        self.audit.record("finished", summary, status=status.value)
        run_metrics.run_finished(
            self.runbook, status.value, self._started, status == RunStatus.REMEDIATED
        )
        self.gate.run_finished = True
        await workflow.wait_condition(workflow.all_handlers_finished)
        self.report_final = self._build_report(finished=True)
        # A child run (backup_restore's read-only phases) is part of its parent's record.
        if workflow.info().parent is None and workflow.patched(INCIDENT_RECORD_PATCH):
            await self._post_incident_record(self.report_final)
        return self.report_final

    def _record_duplicates(self, signal: AlertSignal, repeats: int) -> None:
        """One audit line per delivered signal, however many duplicates the intake batched
        into it, so the trail accounts for each without one line (or one RPC) per alert."""
        alert = signal.alert
        name = alert.name or alert.fingerprint
        first = signal.first_received_at or signal.received_at
        again = "again" if signal.count == 1 else (
            f"again {repeats} time{'s' if repeats > 1 else ''} between {first.isoformat()} "
            f"and {signal.received_at.isoformat()}"
        )  # fmt: skip
        self.audit.record(
            "alert_duplicate",
            f"{alert.source} alert {name} fired {again}; attached to this run",
            actor=alert.source,
            fingerprint=alert.fingerprint,
            count=repeats,
        )

    @property
    def _started(self) -> datetime:
        return workflow.info().start_time

    def _build_report(self, finished: bool = False) -> RunReport:
        return RunReport(
            workflow_id=workflow.info().workflow_id,
            runbook=self.runbook,
            target=self.params.target,
            requested_by=self.params.requested_by,
            dry_run=self.params.dry_run,
            status=self.status,
            summary=self.summary,
            steps=list(self.audit.steps),
            decisions=list(self.gate.decisions),
            started_at=workflow.info().start_time,
            finished_at=workflow.now() if finished else None,
            timeline=dict(self.timeline),
            alerts_attached=self.alerts_attached,
        )
