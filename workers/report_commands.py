"""`remediate report` and `remediate stats`: a run's incident record and the team's numbers,
read from Temporal as `remediate status` reads a run (`workers/cli.py` registers them).

Bad input (a period that is no period, an unknown runbook) is a usage error, exit 2; an
unknown run is the CLI's one-line `error:` (a DecisionError), exit 2.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from workers.settings import Settings, connect
from workers.stats_period import (
    DEFAULT_CONCURRENCY,
    DEFAULT_LIMIT,
    DEFAULT_SINCE,
    SinceError,
    parse_since,
)
from workflows.names import RUNBOOK_WORKFLOW_TYPES

# What reads and renders runs is imported by the command that needs it: every `remediate`
# command imports this module, most only to list it in --help.
if TYPE_CHECKING:
    from workers.team_stats import TeamStats
    from workflows.incident_models import IncidentRecord


class Format(StrEnum):
    md = "md"
    json = "json"


FormatOption = Annotated[Format, typer.Option("--format", help="md (Markdown) or json")]


def report(workflow_id: str, format_: FormatOption = Format.md) -> None:
    """The incident record of WORKFLOW_ID: summary, severity, timeline, impact, root cause,
    resolution, every decision and refusal, follow-ups (so far, while the run goes on)."""

    from workers.run_reports import config_if_any, run_incident_record
    from workflows.incident_markdown import render_json, render_markdown

    async def go() -> IncidentRecord:
        client = await connect(Settings())
        return await run_incident_record(client, workflow_id, config_if_any())

    record = asyncio.run(go())
    typer.echo(render_json(record) if format_ == Format.json else render_markdown(record), nl=False)


def stats(
    since: Annotated[
        str, typer.Option(help="a duration before now (7d, 24h, 30m, 2w) or an ISO 8601 time")
    ] = DEFAULT_SINCE,
    runbook: Annotated[str | None, typer.Option(help="one runbook (default: every one)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    limit: Annotated[int, typer.Option(min=1, help="runs read at most")] = DEFAULT_LIMIT,
    concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="reports read at a time")
    ] = DEFAULT_CONCURRENCY,
) -> None:
    """Per runbook, the runs started in the period: outcomes, median and p90 time to approve
    and to remediate, share auto-approved, refusals. Reads one history event per completed
    run (its result), CONCURRENCY at a time."""
    now = datetime.now(UTC)
    try:
        start = parse_since(since, now)
    except SinceError as err:
        raise typer.BadParameter(str(err), param_hint="--since") from None
    if runbook is not None and runbook not in RUNBOOK_WORKFLOW_TYPES:
        known = ", ".join(RUNBOOK_WORKFLOW_TYPES)
        raise typer.BadParameter(
            f"unknown runbook {runbook!r}; known: {known}", param_hint="--runbook"
        )

    from workers.stats_markdown import render_stats_markdown
    from workers.team_stats import team_stats

    async def go() -> TeamStats:
        client = await connect(Settings())
        return await team_stats(
            client, start, runbook, now=now, limit=limit, concurrency=concurrency
        )

    numbers = asyncio.run(go())
    if as_json:
        typer.echo(json.dumps(numbers.model_dump(mode="json"), indent=2))
    else:
        typer.echo(render_stats_markdown(numbers), nl=False)
