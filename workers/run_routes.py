"""POST /runs: start a runbook as the caller's identity (`Authorization: Bearer <token>`).

The service signs the requester into the run's input (`workers.runs`), so the run's gates
know who asked; the CLI's `remediate start` comes here. A second start for the same runbook
and target reaches the run already going.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request
from pydantic import BaseModel, Field

from activities.config import ConfigError, load_config
from workers.api_shapes import StartResult as StartResult
from workers.http_common import (
    TEMPORAL_DOWN,
    ErrorBody,
    caller_identity,
    temporal_client,
    temporal_unavailable,
)
from workers.runs import start_run, started
from workers.settings import Settings
from workflows.models import RunbookInput
from workflows.names import RUNBOOK_WORKFLOW_TYPES

router = APIRouter()


class StartBody(BaseModel):
    runbook: str = Field(min_length=1, max_length=64)
    target: str = Field(min_length=1, max_length=200)
    parameters: dict[str, str] = Field(default_factory=dict, max_length=50)
    dry_run: bool = False
    reason: str = Field(default="", max_length=2000)


@router.post(
    "/runs",
    responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 422: {"model": ErrorBody}},
)
async def start_runbook(
    request: Request, body: StartBody, authorization: Annotated[str, Header()] = ""
) -> StartResult:
    """Start RUNBOOK on TARGET as your token's identity; its gates know you asked."""
    requester = caller_identity(authorization)
    if body.runbook not in RUNBOOK_WORKFLOW_TYPES:
        known = ", ".join(RUNBOOK_WORKFLOW_TYPES)
        raise HTTPException(404, f"unknown runbook {body.runbook!r}; known: {known}")
    config = load_config()
    try:
        config.target(body.target)
    except ConfigError as err:
        raise HTTPException(404, str(err)) from None
    params = RunbookInput(
        target=body.target,
        requested_by=requester,
        dry_run=body.dry_run,
        reason=body.reason,
        parameters=body.parameters,
    )
    summary = f"{body.runbook} on {body.target}" + (" (dry run)" if body.dry_run else "")
    settings: Settings = request.app.state.settings
    try:
        handle = await start_run(
            temporal_client(request),
            config,
            settings.task_queue,
            body.runbook,
            params,
            summary=summary,
        )
    except TEMPORAL_DOWN as err:
        raise temporal_unavailable(err) from None
    return StartResult(
        workflow_id=handle.id,
        run_id=handle.result_run_id or "",
        started=started(handle),
        requested_by=requester,
    )
