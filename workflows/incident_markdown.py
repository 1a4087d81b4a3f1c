"""The incident record as Markdown (the runbooks' post-incident template: header lines, then
Summary, Timeline, Impact, Root Cause, Resolution, Decisions and Refusals, Follow-ups) and
as JSON. Lists rather than tables, so the same text reads in a terminal, a Slack thread and
a pull request. Pure functions: a workflow renders the record it posts.
"""

from __future__ import annotations

import json

from workflows.incident_causes import span
from workflows.incident_models import DecisionEntry, IncidentRecord, TimelineEntry
from workflows.models import DecisionOutcome

# Entries kept from each end of a long timeline when the text must fit a size cap.
CAPPED_TIMELINE_EACH_END = 4
TRUNCATED = "\n\n_(truncated: `remediate report {workflow_id}` shows the whole record)_\n"


def render_json(record: IncidentRecord) -> str:
    return json.dumps(record.model_dump(mode="json"), indent=2) + "\n"


def render_markdown(record: IncidentRecord, max_chars: int | None = None) -> str:
    """The record as Markdown; with `max_chars` (a chat message's limit), a long timeline is
    shortened to its first and last entries, then the text is cut at a line."""
    text = _markdown(record, record.timeline)
    if max_chars is None or len(text) <= max_chars:
        return text
    keep = CAPPED_TIMELINE_EACH_END
    if len(record.timeline) > 2 * keep:
        text = _markdown(record, record.timeline[:keep] + record.timeline[-keep:], keep)
    if len(text) <= max_chars:
        return text
    tail = TRUNCATED.format(workflow_id=record.workflow_id)
    cut = text[: max(0, max_chars - len(tail))]
    return cut[: cut.rfind("\n") + 1 or len(cut)].rstrip() + tail


def _markdown(record: IncidentRecord, timeline: list[TimelineEntry], gap_after: int = 0) -> str:
    omitted = len(record.timeline) - len(timeline)
    sections = [
        _header(record),
        "## Summary\n\n" + record.summary,
        "## Timeline (UTC)\n\n" + _timeline(timeline, gap_after, omitted),
        "## Impact\n\n" + _impact(record),
        "## Root Cause\n\n" + _bullets(record.root_cause),
        "## Resolution\n\n" + _bullets(record.resolution),
        "## Decisions and Refusals\n\n" + _decisions(record),
        "## Follow-ups\n\n"
        + ("\n".join(f"- [ ] {item}" for item in record.follow_ups) or "- none"),
    ]
    return "\n\n".join(sections) + "\n"


def _header(record: IncidentRecord) -> str:
    date = f"{record.started_at:%Y-%m-%d}"
    duration = _duration(record)
    run = f"`{record.workflow_id}` ({record.runbook}), requested by {record.requested_by}"
    if record.run_page:
        run += f" - [run page]({record.run_page})"
    lines = [
        f"# Incident: {record.title}",
        "",
        f"**Date:** {date}  ",
        f"**Severity:** {record.severity} (from the {record.severity_from})  ",
        f"**Duration:** {duration}  ",
        f"**Status:** {record.status.value}" + (" (dry run)" if record.dry_run else "") + "  ",
        f"**Run:** {run}  ",
        f"**Participants:** {', '.join(record.participants) or 'none'}",
    ]
    return "\n".join(lines)


def _duration(record: IncidentRecord) -> str:
    """The incident's, where the run observed it (the alert's start to the verified fix),
    and the run's own."""
    end = record.finished_at
    run = (
        f"{record.started_at:%H:%M:%S} - {end:%H:%M:%S} UTC "
        f"({span((end - record.started_at).total_seconds())})"
        if end
        else f"since {record.started_at:%H:%M:%S} UTC (still running)"
    )
    impact = record.impact
    if impact.outage_started_at is None or impact.outage_ended_at is None:
        return f"the run: {run}"
    outage = span((impact.outage_ended_at - impact.outage_started_at).total_seconds())
    return (
        f"{impact.outage_started_at:%H:%M:%S} - {impact.outage_ended_at:%H:%M:%S} UTC "
        f"({outage}) as observed; the run: {run}"
    )


def _timeline(entries: list[TimelineEntry], gap_after: int, omitted: int) -> str:
    lines = [f"- {e.at:%H:%M:%S} - {_line(e.event)}" + _by(e.actor) for e in entries]
    if omitted and gap_after:
        lines.insert(gap_after, f"- ... {omitted} more entries ...")
    return "\n".join(lines)


def _by(actor: str) -> str:
    return "" if actor == "engine" else f" ({actor})"


def _impact(record: IncidentRecord) -> str:
    impact = record.impact
    lines = [f"- **Outage (as observed):** {impact.observed}"]
    lines += [f"- **Affected:** {_line(a)}" for a in impact.affected]
    loss = impact.data_loss
    if loss is None:
        lines.append("- **Data loss:** none by this run")
    else:
        stopped = f"{loss.writes_stopped_at:%Y-%m-%d %H:%M:%S}" if loss.writes_stopped_at else "?"
        window = (
            f"{span(loss.seconds)}: writes between {loss.backup_taken_at:%Y-%m-%d %H:%M:%S} "
            f"(the backup {loss.backup}) and {stopped} UTC (writes stopped)"
        )
        lines.append(
            f"- **Data-loss window:** {window}; kept in the safety snapshot {loss.safety_snapshot}"
            if loss.applied
            else f"- **Data loss:** none (the restore was not switched in; it would have "
            f"lost {window})"
        )
    return "\n".join(lines)


def _decisions(record: IncidentRecord) -> str:
    lines = [_decision(d) for d in record.decisions] or ["- no gate was decided"]
    lines += [f"- {r.at:%H:%M:%S} refused ({r.kind}): {_line(r.summary)}" for r in record.refusals]
    return "\n".join(lines)


def _decision(decision: DecisionEntry) -> str:
    by = f"policy {decision.by_policy}" if decision.by_policy else decision.decided_by
    if decision.outcome == DecisionOutcome.COUNTED:
        what = f"approval counted from {by}"
    else:
        what = f"{decision.outcome.value.replace('_', ' ')} by {by}"
    waited = (
        f" after {span(decision.waited_seconds)}" if decision.waited_seconds is not None else ""
    )
    reason = f': "{_line(decision.reason)}"' if decision.reason else ""
    plan = f" - {_line(decision.plan)}" if decision.plan else ""
    return (
        f"- {decision.at:%H:%M:%S} gate {decision.gate}, plan `{decision.plan_id}`: "
        f"**{what}**{waited}{reason}{plan}"
    )


def _bullets(items: list[str]) -> str:
    return "\n".join(f"- {_line(item)}" for item in items) or "- none"


def _line(text: str) -> str:
    """One list item stays one line whatever a summary or a reason holds."""
    return " ".join(text.split())
