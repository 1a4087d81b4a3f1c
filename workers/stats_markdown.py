"""The team's numbers as Markdown: what `remediate stats` prints and GET /stats?format=md
answers (the JSON form is `TeamStats` itself)."""

from __future__ import annotations

from workers.team_stats import Distribution, RunbookStats, TeamStats
from workflows.incident_causes import span


def render_stats_markdown(stats: TeamStats) -> str:
    which = f"{stats.runbook} runs" if stats.runbook else "Runs"
    head = (
        f"# {which} started {stats.since:%Y-%m-%d %H:%M} - {stats.until:%Y-%m-%d %H:%M} UTC: "
        f"{stats.runs}"
    )
    notes = []
    if stats.truncated:
        notes.append("_More runs started in the period than the limit: the oldest are left out._")
    if stats.unreadable:
        notes.append(
            f"_{stats.unreadable} completed run(s) could not be read: not in the numbers._"
        )
    blocks = [head, *notes, *(_runbook(r) for r in stats.runbooks)]
    if not stats.runbooks:
        blocks.append("No runs in this period.")
    return "\n\n".join(blocks) + "\n"


def _runbook(stats: RunbookStats) -> str:
    outcomes = ", ".join(f"{name} {count}" for name, count in stats.outcomes.items())
    share = (
        f"{stats.auto_approved} of {stats.approvals} approvals ({stats.auto_approved_share:.0%})"
        if stats.auto_approved_share is not None
        else "no approvals"
    )
    return "\n".join(
        [
            f"## {stats.runbook}",
            "",
            f"- **Runs:** {stats.runs} ({outcomes})",
            f"- **Time to approve** (by a person): {_distribution(stats.time_to_approve)}",
            f"- **Time to remediate** (start to verified fix): "
            f"{_distribution(stats.time_to_remediate)}",
            f"- **Auto-approved:** {share}",
            f"- **Refusals:** {stats.refusals}",
        ]
    )


def _distribution(values: Distribution) -> str:
    if values.median_seconds is None or values.p90_seconds is None:
        return "none"
    return f"median {span(values.median_seconds)}, p90 {span(values.p90_seconds)} ({values.count})"
