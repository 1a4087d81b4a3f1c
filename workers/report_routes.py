"""GET /runs/{workflow_id}/report (a run's incident record) and GET /stats (the team's
numbers per runbook), as JSON or, with `?format=md`, Markdown. Read-only, but a record
names people and systems: the caller authenticates with `Authorization: Bearer <token>` or
a browser session (the pages), never anonymously."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from activities.config import load_config
from workers.approvals import DecisionError
from workers.http_common import (
    TEMPORAL_DOWN,
    ErrorBody,
    caller_or_session_identity,
    temporal_client,
    temporal_unavailable,
)
from workers.payload_codec import PayloadDecryptionError
from workers.run_reports import run_incident_record
from workers.stats_markdown import render_stats_markdown
from workers.team_stats import DEFAULT_SINCE, SinceError, TeamStats, parse_since, team_stats
from workflows.incident_markdown import render_markdown
from workflows.incident_models import IncidentRecord
from workflows.names import RUNBOOK_WORKFLOW_TYPES

router = APIRouter()

Format = Annotated[
    Literal["json", "md"], Query(alias="format", description="json (default) or md (Markdown)")
]
MARKDOWN = "text/markdown; charset=utf-8"
READ_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody},
    404: {"model": ErrorBody},
    422: {"model": ErrorBody},
    503: {"model": ErrorBody},
}


@router.get(
    "/runs/{workflow_id}/report",
    responses={**READ_RESPONSES, 200: {"model": IncidentRecord, "content": {MARKDOWN: {}}}},
)
async def run_report(
    request: Request,
    workflow_id: str,
    format_: Format = "json",
    authorization: Annotated[str, Header()] = "",
) -> Response:
    """The run's incident record (so far, while it runs); 404 if there is no such run."""
    caller_or_session_identity(request, authorization)
    try:
        record = await run_incident_record(temporal_client(request), workflow_id, load_config())
    except DecisionError as err:
        raise HTTPException(err.status, str(err)) from None
    except TEMPORAL_DOWN as err:
        raise temporal_unavailable(err) from None
    except PayloadDecryptionError as err:
        raise HTTPException(503, f"the service cannot open this run's history: {err}") from None
    if format_ == "md":
        return PlainTextResponse(render_markdown(record), media_type=MARKDOWN)
    return JSONResponse(record.model_dump(mode="json"))


@router.get("/stats", responses={**READ_RESPONSES, 200: {"model": TeamStats}})
async def stats(
    request: Request,
    since: Annotated[str, Query(max_length=40, description="7d, 24h, 30m, 2w or ISO 8601")] = (
        DEFAULT_SINCE
    ),
    runbook: Annotated[str | None, Query(max_length=64)] = None,
    format_: Format = "json",
    authorization: Annotated[str, Header()] = "",
) -> Response:
    """Per runbook, the runs started since `since`: outcomes, time to approve and to
    remediate (median, p90), share auto-approved, refusals."""
    caller_or_session_identity(request, authorization)
    if runbook is not None and runbook not in RUNBOOK_WORKFLOW_TYPES:
        known = ", ".join(RUNBOOK_WORKFLOW_TYPES)
        raise HTTPException(404, f"unknown runbook {runbook!r}; known: {known}")
    try:
        numbers = await team_stats(temporal_client(request), _since(since), runbook)
    except TEMPORAL_DOWN as err:
        raise temporal_unavailable(err) from None
    if format_ == "md":
        return PlainTextResponse(render_stats_markdown(numbers), media_type=MARKDOWN)
    return JSONResponse(numbers.model_dump(mode="json"))


def _since(text: str) -> datetime:
    try:
        return parse_since(text, datetime.now(UTC))
    except SinceError as err:
        raise HTTPException(422, str(err)) from None
