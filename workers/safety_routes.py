"""The kill switch over HTTP: POST /safety/pause (any identity), POST /safety/resume (the
`[safety] resume_group` only), GET /safety (its state and audit). The service signs the
switch for the caller it authenticated; the envelope verifies it and records who and why."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Header, HTTPException, Request
from pydantic import BaseModel, Field
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError

from activities.config import load_config
from activities.safety import (
    ENVELOPE_TASK_TIMEOUT,
    SAFETY_WORKFLOW_TYPE,
    PauseRequest,
    SafetyQuery,
    SafetyStatus,
    safety_workflow_id,
)
from workers.http_common import (
    TEMPORAL_DOWN,
    ErrorBody,
    caller_identity,
    temporal_client,
    temporal_unavailable,
)
from workers.settings import Settings
from workers.signing import safety_decision

router = APIRouter()


class SwitchBody(BaseModel):
    reason: str = Field(default="", max_length=2000)


async def _envelope(client: Client, task_queue: str) -> str:
    workflow_id = safety_workflow_id(task_queue)
    await client.start_workflow(
        SAFETY_WORKFLOW_TYPE,
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        task_timeout=ENVELOPE_TASK_TIMEOUT,
    )
    return workflow_id


@router.post(
    "/safety/{kind}",
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 422: {"model": ErrorBody}},
)
async def switch(
    request: Request,
    kind: Literal["pause", "resume"],
    body: SwitchBody,
    authorization: Annotated[str, Header()] = "",
) -> SafetyStatus:
    """Pause every remediation (it stops before acting; alerts are still taken), or resume."""
    who = caller_identity(authorization)
    config = load_config()
    if kind == "pause" and not body.reason:
        raise HTTPException(422, "a pause needs a reason: every waiting run shows it")
    group = config.safety.resume_group
    if kind == "resume" and group not in config.identities[who].groups:
        raise HTTPException(403, f"{who} is not in {group}, who may resume remediations")
    settings: Settings = request.app.state.settings
    client = temporal_client(request)
    try:
        workflow_id = await _envelope(client, settings.task_queue)
        token = safety_decision(config, who, kind, workflow_id, body.reason)
        status: SafetyStatus = await client.get_workflow_handle(workflow_id).execute_update(
            kind,
            PauseRequest(token=token, by=who, reason=body.reason),
            result_type=SafetyStatus,
            rpc_timeout=timedelta(seconds=30),
        )
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause)
        raise HTTPException(403, message) from None
    except TEMPORAL_DOWN as err:
        raise temporal_unavailable(err) from None
    return status


@router.get("/safety", responses={401: {"model": ErrorBody}})
async def safety_state(
    request: Request, authorization: Annotated[str, Header()] = ""
) -> SafetyStatus:
    """Whether remediations are paused, by whom, and who paused and resumed lately."""
    caller_identity(authorization)
    settings: Settings = request.app.state.settings
    client = temporal_client(request)
    try:
        workflow_id = await _envelope(client, settings.task_queue)
        status: SafetyStatus = await client.get_workflow_handle(workflow_id).query(
            "status", SafetyQuery(target="", runbook=""), result_type=SafetyStatus
        )
    except TEMPORAL_DOWN as err:
        raise temporal_unavailable(err) from None
    return status
