"""The incident record: what a run did, in the shape of the runbooks' post-incident templates
(summary, severity, timeline, impact, root cause, resolution, decisions and refusals,
follow-ups), for the people who write the post-mortem.

Computed from the run's final `RunReport` by pure functions, not kept in workflow state: the
report already holds every fact (the audit trail with the plans and the diagnosis, the
decisions, the milestones), so every run has a record, those that ended before records
existed included, and improving the record changes no workflow's history. Deterministic (no
clock, no I/O), so a workflow may build it too: `RunbookWorkflow.finish` posts it.

Its contracts: `workflows/incident_models.py`; renderers: `workflows/incident_markdown.py`;
root cause and follow-ups, per runbook: `workflows/incident_causes.py`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from workflows.incident_causes import Diagnosis, diagnose, plans_by_id, span
from workflows.incident_models import (
    DecisionEntry,
    Impact,
    IncidentRecord,
    Refusal,
    TimelineEntry,
)
from workflows.models import (
    AlertContext,
    ApprovalDecision,
    DecisionOutcome,
    RunReport,
    RunStatus,
    StepRecord,
)

# Audit steps that are a refusal of something (see Refusal).
REFUSAL_KINDS = frozenset(
    {
        "decision_refused",
        "auto_approval_declined",
        "requester_unverified",
        "approved_plan_dropped",
        "approved_plan_stale",
        "plan_drift",
    }
)
# Audit steps the timeline leaves out: the diagnosis is the root cause section, the rest is
# noise in a post-mortem (each is still in `remediate status` and the JSON report).
NOT_IN_TIMELINE = frozenset(
    {
        "diagnosis",
        "alert_duplicate",
        "alert_resolved_elsewhere",
        "plan_confirmed",
        "decision_duplicate",
        "requester_unverified",
        "auto_approval_declined",
    }
)
TIMELINE_LABELS = {
    "started": "run started",
    "plan": "planned",
    "gate_opened": "gate opened",
    "gate_approved": "approved",
    "gate_rejected": "rejected",
    "gate_timed_out": "gate timed out",
    "gate_resolved": "gate closed",
    "gate_dry_run": "dry run",
    "gate_superseded": "plan superseded",
    "gate_approval_counted": "approval counted",
    "gate_reminder": "reminder",
    "decision_refused": "decision refused",
    "verification_passed": "verified",
    "verification_failed": "verification failed",
    "finished": "run ended",
}
# Without a severity label on the alert, how bad the run's outcome says it was.
OUTCOME_SEVERITY = {
    RunStatus.ESCALATED: "high",
    RunStatus.STOPPED: "high",
    RunStatus.CANCELLED: "high",
    RunStatus.REMEDIATED: "medium",
    RunStatus.ABORTED: "medium",
    RunStatus.REJECTED: "medium",
    RunStatus.RESOLVED: "low",
    RunStatus.NO_ACTION_NEEDED: "low",
    RunStatus.DRY_RUN: "low",
}
SEVERITY_LABELS = ("severity", "priority")


def incident_record(report: RunReport, run_page: str | None = None) -> IncidentRecord:
    """The incident record of the run whose final (or current) report is `report`;
    `run_page` is the run's page (`activities.links.run_page_url`), when pages are served."""
    started = _started_step(report)
    alert = _alert(started)
    diagnosis = diagnose(report, alert)
    severity, severity_from = _severity(report, alert)
    decisions = _decisions(report)
    impact = _impact(report, alert, diagnosis)
    return IncidentRecord(
        workflow_id=report.workflow_id,
        runbook=report.runbook,
        target=report.target,
        title=_title(report, alert),
        status=report.status,
        outcome=report.summary,
        severity=severity,
        severity_from=severity_from,
        dry_run=report.dry_run,
        requested_by=report.requested_by,
        reason=str(started.details.get("reason") or "") if started else "",
        alert=alert,
        started_at=report.started_at,
        finished_at=report.finished_at,
        participants=_participants(report, decisions),
        summary=_summary(report, alert, decisions),
        timeline=_timeline(report, alert),
        impact=impact,
        root_cause=diagnosis.root_cause,
        resolution=_resolution(report),
        decisions=decisions,
        refusals=[
            Refusal(at=s.at, kind=s.kind, actor=s.actor, summary=s.summary)
            for s in report.steps
            if s.kind in REFUSAL_KINDS
        ],
        follow_ups=diagnosis.follow_ups + _status_follow_ups(report, decisions),
        run_page=run_page,
    )


def _started_step(report: RunReport) -> StepRecord | None:
    return next((s for s in report.steps if s.kind == "started"), None)


def _alert(started: StepRecord | None) -> AlertContext | None:
    raw = started.details.get("alert") if started else None
    return AlertContext.model_validate(raw) if isinstance(raw, dict) else None


def _severity(
    report: RunReport, alert: AlertContext | None
) -> tuple[str, Literal["alert", "outcome"]]:
    labels = alert.labels if alert else {}
    for label in SEVERITY_LABELS:
        if labels.get(label):
            return labels[label], "alert"
    return OUTCOME_SEVERITY.get(report.status, "medium"), "outcome"


def _title(report: RunReport, alert: AlertContext | None) -> str:
    what = alert.name if alert and alert.name else report.runbook
    return f"{what} on {report.target}: {report.status.value}"


def _summary(report: RunReport, alert: AlertContext | None, decisions: list[DecisionEntry]) -> str:
    if alert is not None and alert.source != "manual":
        fired = f"{alert.source} alert {alert.name or alert.fingerprint} fired for {report.target}"
        first = fired + (f" ({alert.summary})" if alert.summary else "") + ". "
    else:
        first = ""
    ran = (
        f"The engine ran {report.runbook} on {report.target}, requested by "
        f"{report.requested_by}" + (" as a dry run" if report.dry_run else "") + ". "
    )
    closed = [d for d in decisions if d.outcome != DecisionOutcome.COUNTED]
    decided = ""
    if closed:
        last = closed[-1]
        by = f"policy {last.by_policy}" if last.by_policy else last.decided_by
        decided = f"Plan {last.plan_id} was {last.outcome.value.replace('_', ' ')} by {by}. "
    return f"{first}{ran}{decided}Outcome ({report.status.value}): {report.summary}."


def _decisions(report: RunReport) -> list[DecisionEntry]:
    plans = plans_by_id(report)
    opened = {
        int(s.details["gate"]): s.at
        for s in report.steps
        if s.kind == "gate_opened" and isinstance(s.details.get("gate"), int)
    }
    counted = [
        DecisionEntry(
            at=s.at,
            gate=_gate_of(s, report.decisions),
            plan_id=str(s.details.get("plan_id", "")),
            plan=_plan_text(plans.get(str(s.details.get("plan_id", "")))),
            outcome=DecisionOutcome.COUNTED,
            decided_by=s.actor,
            reason=str(s.details.get("reason") or ""),
        )
        for s in report.steps
        if s.kind == "gate_approval_counted"
    ]
    closed = [
        DecisionEntry(
            at=d.decided_at,
            gate=d.gate,
            plan_id=d.plan_id,
            plan=_plan_text(plans.get(d.plan_id)),
            outcome=d.outcome,
            decided_by=d.decided_by,
            approvers=d.approvers,
            by_policy=d.by_policy,
            reason=d.reason,
            waited_seconds=(
                (d.decided_at - opened[d.gate]).total_seconds()
                if d.gate in opened and d.by_policy is None
                else None
            ),
        )
        for d in report.decisions
    ]
    return sorted(counted + closed, key=lambda d: d.at)


def _gate_of(step: StepRecord, decisions: list[ApprovalDecision]) -> int:
    plan_id = step.details.get("plan_id")
    return next((d.gate for d in decisions if d.plan_id == plan_id), 0)


def _plan_text(plan: dict[str, Any] | None) -> str:
    if not plan:
        return ""
    impact = plan.get("expected_impact") or {}
    return f"{plan.get('action', '?')} on {plan.get('target', '?')}: {impact.get('summary', '')}"


def _participants(report: RunReport, decisions: list[DecisionEntry]) -> list[str]:
    people = [report.requested_by]
    for decision in decisions:
        if decision.by_policy is None:
            people += decision.approvers or [decision.decided_by]
    people += [s.actor for s in report.steps if s.kind in REFUSAL_KINDS]
    people += [s.actor for s in report.steps if s.kind == "hold_ended"]
    machine = ("engine", "dry-run", "alert")
    return list(
        dict.fromkeys(
            p for p in people if p and p not in machine and not p.startswith(("policy:", "alert:"))
        )
    )


def _timeline(report: RunReport, alert: AlertContext | None) -> list[TimelineEntry]:
    entries = []
    if alert is not None and alert.starts_at is not None:
        name = alert.name or alert.fingerprint
        entries.append(
            TimelineEntry(
                at=alert.starts_at,
                kind="alert_fired",
                event=f"alert fired: {alert.source} {name}"
                + (f" ({alert.summary})" if alert.summary else ""),
                actor=alert.source,
            )
        )
    for step in report.steps:
        if step.kind in NOT_IN_TIMELINE:
            continue
        label = TIMELINE_LABELS.get(step.kind, step.kind.replace("_", " "))
        entries.append(
            TimelineEntry(
                at=step.at, kind=step.kind, event=f"{label}: {step.summary}", actor=step.actor
            )
        )
    return sorted(entries, key=lambda e: e.at)


def _impact(report: RunReport, alert: AlertContext | None, diagnosis: Diagnosis) -> Impact:
    start, start_from = _outage_start(report, alert, diagnosis)
    end = diagnosis.outage_ended_at or _outage_end(report)
    seconds = (end - start).total_seconds() if start and end else None
    if report.status == RunStatus.NO_ACTION_NEEDED:
        observed = f"the run found nothing to act on: {report.summary}"
    elif end is not None and start is not None and seconds is not None:
        how = diagnosis.outage_what or (
            "resolved on its own" if report.status == RunStatus.RESOLVED else "fixed and verified"
        )
        observed = (
            f"{report.target}: {how}, from {start:%Y-%m-%d %H:%M:%S} UTC ({start_from}) to "
            f"{end:%H:%M:%S} UTC: {span(seconds)}"
        )
    else:
        still = f" at {report.finished_at:%Y-%m-%d %H:%M:%S} UTC" if report.finished_at else ""
        since = f" since {start:%Y-%m-%d %H:%M:%S} UTC ({start_from})" if start else ""
        observed = f"{report.target}: not fixed by this run{since}; {report.status.value}{still}"
    return Impact(
        outage_started_at=start,
        outage_start_from=start_from,
        outage_ended_at=end,
        outage_seconds=seconds,
        observed=observed,
        affected=diagnosis.affected,
        data_loss=diagnosis.data_loss,
    )


def _outage_start(
    report: RunReport, alert: AlertContext | None, diagnosis: Diagnosis
) -> tuple[datetime | None, str]:
    if report.status == RunStatus.NO_ACTION_NEEDED:
        return None, ""
    if diagnosis.outage_ended_at is not None and diagnosis.outage_started_at is not None:
        return diagnosis.outage_started_at, diagnosis.outage_start_from  # the runbook's window
    if alert is not None and alert.starts_at is not None:
        return alert.starts_at, f"{alert.source} alert {alert.name or alert.fingerprint}"
    if diagnosis.outage_started_at is not None:
        return diagnosis.outage_started_at, diagnosis.outage_start_from
    if "detected" in report.timeline:
        return report.timeline["detected"], "this run's detection"
    return report.started_at, "the run's start (the alert gave no start time)"


def _outage_end(report: RunReport) -> datetime | None:
    if report.status == RunStatus.RESOLVED:
        resolved = [s.at for s in report.steps if s.kind == "alert_resolved"]
        return resolved[-1] if resolved else report.finished_at
    if report.status != RunStatus.REMEDIATED:
        return None
    if "verified" in report.timeline:
        return report.timeline["verified"]
    passed = [s.at for s in report.steps if s.kind in ("verification_passed", "validation")]
    return passed[-1] if passed else report.finished_at


RESOLUTION_KINDS = frozenset({"action", "compensation", "snapshot", "read_only_exit"})


def _resolution(report: RunReport) -> list[str]:
    done = [s.summary for s in report.steps if s.kind in RESOLUTION_KINDS]
    if not done:
        done = ["nothing was changed"]
    return [*done, f"outcome ({report.status.value}): {report.summary}"]


def _status_follow_ups(report: RunReport, decisions: list[DecisionEntry]) -> list[str]:
    """What the way the run ended leaves for a person, whatever the runbook."""
    target, summary, status = report.target, report.summary, report.status
    ups = []
    if status == RunStatus.ESCALATED:
        ups.append(f"Take over {target}: the engine escalated ({summary})")
    elif status == RunStatus.STOPPED:
        ups.append(f"The kill switch stopped the run: check {target}'s state ({summary})")
    elif status == RunStatus.CANCELLED:
        ups.append(f"The run was cancelled: check {target}'s state ({summary})")
    elif status == RunStatus.REJECTED:
        rejected = [d for d in decisions if d.outcome == DecisionOutcome.REJECTED]
        who = f" by {rejected[-1].decided_by}" if rejected else ""
        why = f" ({rejected[-1].reason})" if rejected and rejected[-1].reason else ""
        ups.append(
            f"The plan was rejected{who}{why}: if {target} still has the problem, remedy it "
            "by hand or start the runbook again"
        )
    elif status == RunStatus.ABORTED:
        timed_out = any(d.outcome == DecisionOutcome.TIMED_OUT for d in decisions)
        ups.append(
            f"Nobody approved the plan before the gate's deadline: check {target} (the problem "
            "may still be there) and why the approvers were not reached"
            if timed_out
            else f"Fix what stopped the run, then start it again: {summary}"
        )
    failed = [s for s in report.steps if s.kind == "notification_failed"]
    if failed:
        ups.append(
            f"Fix the notification channel: {len(failed)} notification(s) could not be sent "
            f"({failed[0].summary})"
        )
    return ups
