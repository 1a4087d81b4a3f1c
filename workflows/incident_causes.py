"""Root cause, follow-ups and what was affected, per runbook, read from what each runbook's
diagnosis and plans put in the audit trail (`StepRecord.details`, the plans as planned):
pool_restart's connections by application and the idle sessions it planned to end,
rollback's release and whether the outage followed it, backup_restore's backup and its
data-loss window. Other runbooks get their diagnosis lines and their plan's effects.

Pure functions of the report, like `workflows/incident_record.py`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from workflows.incident_models import DataLossWindow
from workflows.models import AlertContext, DecisionOutcome, RunReport, RunStatus, StepRecord
from workflows.names import BACKUP_RESTORE, KEY_ROTATION, POOL_RESTART, ROLLBACK

# A post-mortem needs the findings, not every probe round.
MAX_FINDINGS = 6


@dataclass
class Diagnosis:
    root_cause: list[str] = field(default_factory=list)
    follow_ups: list[str] = field(default_factory=list)
    affected: list[str] = field(default_factory=list)
    data_loss: DataLossWindow | None = None
    # Where the runbook itself knows the outage's window: rollback judged when it began; a
    # restore's is the time writes were off.
    outage_started_at: datetime | None = None
    outage_start_from: str = ""
    outage_ended_at: datetime | None = None
    outage_what: str = ""


Plan = dict[str, Any]


def plans_by_id(report: RunReport) -> dict[str, Plan]:
    """Every plan the run made, as the gate recorded it (the `plan` steps)."""
    return {
        str(s.details["plan_id"]): s.details["plan"]
        for s in report.steps
        if s.kind == "plan" and isinstance(s.details.get("plan"), dict)
    }


def acted_plan(report: RunReport) -> Plan | None:
    """The plan of the run's last approval, else its last plan (None: it made none)."""
    plans = plans_by_id(report)
    for decision in reversed(report.decisions):
        if decision.outcome == DecisionOutcome.APPROVED and decision.plan_id in plans:
            return plans[decision.plan_id]
    return list(plans.values())[-1] if plans else None


def diagnose(report: RunReport, alert: AlertContext | None) -> Diagnosis:
    plan = acted_plan(report)
    specific = RUNBOOKS.get(report.runbook)
    diagnosis = specific(report, plan) if specific else Diagnosis()
    findings = list(dict.fromkeys(s.summary for s in _diagnosis_steps(report)))
    if len(findings) > MAX_FINDINGS:
        findings = [
            *findings[: MAX_FINDINGS - 1],
            f"... and {len(findings) - MAX_FINDINGS + 1} more findings",
        ]
    diagnosis.root_cause += [f"found: {f}" for f in findings if f not in diagnosis.root_cause]
    if not diagnosis.root_cause:
        said = alert.summary if alert and alert.summary else _reason(report)
        diagnosis.root_cause.append(
            "the run made no diagnosis of its own" + (f"; the alert said: {said}" if said else "")
        )
    diagnosis.affected = diagnosis.affected or _affected(report, plan)
    return diagnosis


def _diagnosis_steps(report: RunReport) -> list[StepRecord]:
    return [s for s in report.steps if s.kind == "diagnosis"]


def _reason(report: RunReport) -> str:
    started = next((s for s in report.steps if s.kind == "started"), None)
    return str(started.details.get("reason") or "") if started else ""


def _acted(report: RunReport) -> bool:
    return any(s.kind == "action" for s in report.steps)


def _affected(report: RunReport, plan: Plan | None) -> list[str]:
    if plan is None:
        return [f"{report.target}: no plan was made; nothing was changed"]
    impact = plan.get("expected_impact") or {}
    if not _acted(report):
        return [f"{report.target}: nothing was changed (planned: {impact.get('summary', '')})"]
    effects = [
        str(e.get("what", "")) + ("" if e.get("undoable") else " (cannot be undone)")
        for e in impact.get("effects") or []
    ]
    return [f"{report.target}: {impact.get('summary', '')}", *effects]


# -- pool_restart ----------------------------------------------------------------------


def _pool_restart(report: RunReport, plan: Plan | None) -> Diagnosis:
    found = Diagnosis()
    usages = [s.details.get("usage") for s in _diagnosis_steps(report)]
    usage = next((u for u in usages if isinstance(u, dict)), None)
    by_app: dict[str, int] = {}
    if usage and "max_connections" in usage:
        found.root_cause.append(
            f"the connection pool of {usage.get('database', report.target)} was exhausted: "
            f"{usage['total']} of {usage['max_connections']} connections in use "
            f"({float(usage.get('usage', 0)):.0%})"
        )
        by_app = {str(k): int(v) for k, v in (usage.get("by_application") or {}).items()}
        if by_app:
            found.root_cause.append("connections by application: " + _counts(by_app))
    sessions = _planned_sessions(report)
    if sessions:
        idle = _terminate_plan(report)["parameters"].get("idle_older_than_seconds", "?")
        held = Counter(str(s.get("application") or "") for s in sessions)
        found.root_cause.append(
            f"{len(sessions)} sessions idle for more than {idle} s, held by {_counts(held)}: "
            "connections taken from a pool and never given back (a leak)"
        )
        app, count = held.most_common(1)[0]
        found.follow_ups.append(
            f"Investigate the connection leak in {app}: it held {count} of the "
            f"{len(sessions)} sessions left idle for more than {idle} s (its pool does not "
            "return or close connections)"
            if app
            else f"Find the client that leaks connections: {count} of the {len(sessions)} idle "
            "sessions had no application_name (set application_name in each client's "
            "connection string to tell them apart)"
        )
    if plan is not None and plan.get("action") == "restart_app":
        why = plan.get("parameters", {}).get("why", "")
        found.root_cause.append(f"an application restart was planned: {why}")
        if not sessions and by_app:
            app, count = max(by_app.items(), key=lambda kv: kv[1])
            found.follow_ups.append(
                f"Find why {app or '(no application_name)'} holds {count} connections: no "
                "session was idle long enough to end, so busy or short-lived connections "
                "filled the pool (its pool size, slow queries, or a leak that keeps them busy)"
            )
    return found


def _terminate_plan(report: RunReport) -> Plan:
    plans = [
        p for p in plans_by_id(report).values() if p.get("action") == "terminate_idle_sessions"
    ]
    return plans[-1] if plans else {"parameters": {}}


def _planned_sessions(report: RunReport) -> list[dict[str, Any]]:
    sessions = _terminate_plan(report)["parameters"].get("sessions") or []
    return [s for s in sessions if isinstance(s, dict)]


def _counts(counts: dict[str, int] | Counter[str]) -> str:
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{name or '(no application_name)'} {n}" for name, n in ordered)


# -- rollback --------------------------------------------------------------------------


def _rollback(report: RunReport, plan: Plan | None) -> Diagnosis:
    found = Diagnosis()
    cause = next((s for s in _diagnosis_steps(report) if "follows_deploy" in s.details), None)
    if cause is not None:
        found.root_cause.append(cause.summary)
        started = cause.details.get("outage_started_at")
        if isinstance(started, str):
            found.outage_started_at = _utc(datetime.fromisoformat(started))
            found.outage_start_from = str(cause.details.get("outage_start_from", ""))
        if not cause.details["follows_deploy"]:
            found.follow_ups.append(
                f"The outage does not follow a deploy: investigate {report.target} itself (its "
                "database, its dependencies, its capacity)"
            )
    if plan is None or plan.get("action") != "rollback_deployment":
        return found
    bad, good = plan["parameters"].get("from") or {}, plan["parameters"].get("to") or {}
    found.root_cause.insert(
        0,
        f"release {_release(bad)} was serving production when {report.target} went down",
    )
    rolled_forward = any(s.kind == "compensation" for s in report.steps)
    if rolled_forward:
        found.follow_ups.append(
            f"Production is on {bad.get('id')} again and still unhealthy: rolling back to "
            f"{good.get('id')} did not help, so find the cause elsewhere"
        )
    elif _acted(report):
        found.follow_ups.append(
            f"Find and fix what broke in release {_release(bad, created=False)} before "
            "deploying it again; "
            f"production serves {good.get('id')} until then"
        )
    return found


def _release(release: dict[str, Any], created: bool = True) -> str:
    commit = f" (commit {str(release['commit'])[:12]})" if release.get("commit") else ""
    message = f' "{release["message"]}"' if release.get("message") else ""
    at = release.get("created_at") if created else None
    when = f", created {str(at)[:19].replace('T', ' ')} UTC," if at else ""
    return f"{release.get('id', '?')}{commit}{message}{when}"


# -- backup_restore ------------------------------------------------------------------


def _backup_restore(report: RunReport, plan: Plan | None) -> Diagnosis:
    found = Diagnosis()
    why = _reason(report)
    if why:
        found.root_cause.append(f"the data of {report.target} had to be restored: {why}")
    if plan is None or plan.get("action") != "restore_database":
        return found
    params = plan["parameters"]
    taken = _utc(datetime.fromisoformat(str(params["backup_taken_at"])))
    stopped = report.timeline.get("writes_stopped")
    switched_back = any(s.kind == "compensation" for s in report.steps)
    applied = "switched" in report.timeline and not switched_back
    seconds = (
        int((stopped - taken).total_seconds())
        if stopped is not None
        else int(params.get("data_loss_window_seconds", 0))
    )
    snapshot = str(params.get("safety_snapshot", ""))
    found.data_loss = DataLossWindow(
        backup=str(params.get("backup", "")),
        backup_taken_at=taken,
        writes_stopped_at=stopped,
        seconds=max(0, seconds),
        applied=applied,
        safety_snapshot=snapshot,
    )
    if stopped is not None:
        found.outage_started_at, found.outage_start_from = stopped, "writes stopped"
        found.outage_what = "writes were off (read-only) while the data was restored"
        exits = [s.at for s in report.steps if s.kind == "read_only_exit"]
        if exits and report.status == RunStatus.REMEDIATED:
            found.outage_ended_at = exits[-1]
    live = (params.get("databases") or {}).get("live", report.target)
    previous = (params.get("databases") or {}).get("previous", "")
    found.root_cause.append(
        f"restored from the backup {params.get('backup')} taken {taken:%Y-%m-%d %H:%M:%S} UTC"
    )
    if applied:
        end = f"{stopped:%Y-%m-%d %H:%M:%S}" if stopped else "the restore"
        found.follow_ups.append(
            f"Recover the writes of the data-loss window ({taken:%Y-%m-%d %H:%M:%S} to {end} "
            f"UTC, {span(seconds)}) from the safety snapshot {snapshot} if any are needed"
        )
        found.follow_ups.append(f"Find what damaged the data of {live} so it does not happen again")
        drop = f"dropped the replaced database {previous}"
        dropped = any(s.kind == "action" and drop in s.summary for s in report.steps)
        if previous and not dropped:
            found.follow_ups.append(
                f"Drop the replaced database {previous} once nothing in it is needed"
            )
    if "READ-ONLY" in report.summary or "WRITES ARE STILL OFF" in report.summary:
        found.follow_ups.append(
            f"Writes are still off on {report.target}: restore them through the read-only "
            f"exit gate (remediate start read_only --target {report.target} --param phase=exit "
            "--param mode=postgres)"
        )
    return found


# -- key_rotation --------------------------------------------------------------------


def _key_rotation(report: RunReport, plan: Plan | None) -> Diagnosis:
    found = Diagnosis()
    if "exposed" in report.summary and report.status == RunStatus.REMEDIATED:
        found.follow_ups.append(
            f"Audit what the exposed credential of {report.target} was used for while it was "
            "exposed, and how it leaked"
        )
    return found


RUNBOOKS: dict[str, Callable[[RunReport, Plan | None], Diagnosis]] = {
    POOL_RESTART: _pool_restart,
    ROLLBACK: _rollback,
    BACKUP_RESTORE: _backup_restore,
    KEY_ROTATION: _key_rotation,
}


def _utc(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def span(seconds: float) -> str:
    """A duration as people say it: `42 s`, `5 min 12 s`, `2 h 3 min`."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
