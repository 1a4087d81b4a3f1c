"""The approvals HTTP API: GET /approvals (open gates), POST /approvals/{workflow_id}/approve
or /reject (a decision on the plan the caller reviewed), and POST /runs/{workflow_id}/end-hold
(end a read-only run's hold early). Callers authenticate with `Authorization: Bearer <token>`;
the decisions themselves are made by `workers.approvals`, shared with the CLI."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, HTTPException, Request
from pydantic import BaseModel, Field

from activities.approval_auth import AuthenticationFailedError, identify
from activities.config import load_config
from workers.approvals import DecisionError, decide, end_hold, pending_gates
from workers.http_common import ErrorBody, temporal_client
from workers.metrics import DECISIONS, GATES_PENDING
from workflows.models import ApprovalDecision, GateView

router = APIRouter()


class DecisionBody(BaseModel):
    plan_id: str = Field(min_length=1, max_length=64, description="the plan you reviewed")
    reason: str = Field(default="", max_length=2000)


class EndHoldBody(BaseModel):
    reason: str = Field(default="", max_length=2000)


def _caller(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(status_code=401, detail="send Authorization: Bearer <your token>")
    return token.strip()


@router.get("/approvals", responses={401: {"model": ErrorBody}})
async def list_approvals(
    request: Request, authorization: Annotated[str, Header()] = ""
) -> list[GateView]:
    config = load_config()
    token = _caller(authorization)
    try:
        identify(config, token)
    except AuthenticationFailedError as err:
        raise HTTPException(status_code=401, detail=str(err)) from None
    gates = await pending_gates(temporal_client(request))
    GATES_PENDING.set(len(gates))
    return gates


@router.post(
    "/approvals/{workflow_id}/{kind}",
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 404: {"model": ErrorBody},
               409: {"model": ErrorBody}},
)  # fmt: skip
async def decide_gate(
    request: Request,
    workflow_id: str,
    kind: Literal["approve", "reject"],
    body: DecisionBody,
    authorization: Annotated[str, Header()] = "",
) -> ApprovalDecision:
    """Approve or reject the plan you reviewed (its plan_id), as your token's identity."""
    config = load_config()
    token = _caller(authorization)
    if kind == "reject" and not body.reason:
        raise HTTPException(status_code=422, detail="a rejection needs a reason")
    try:
        decision = await decide(
            temporal_client(request), config, token, workflow_id, kind, body.reason, body.plan_id
        )
    except AuthenticationFailedError as err:
        DECISIONS.labels(kind, "unauthenticated").inc()
        raise HTTPException(status_code=401, detail=str(err)) from None
    except DecisionError as err:
        DECISIONS.labels(kind, "refused").inc()
        raise HTTPException(status_code=err.status, detail=str(err)) from None
    DECISIONS.labels(kind, decision.outcome.value).inc()
    return decision


@router.post(
    "/runs/{workflow_id}/end-hold",
    responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
async def end_read_only_hold(
    request: Request,
    workflow_id: str,
    body: EndHoldBody,
    authorization: Annotated[str, Header()] = "",
) -> dict[str, str]:
    """End a read-only run's hold early; its exit plan then waits for approval at the gate."""
    token = _caller(authorization)
    client = temporal_client(request)
    try:
        result = await end_hold(client, load_config(), token, workflow_id, body.reason)
    except AuthenticationFailedError as err:
        raise HTTPException(status_code=401, detail=str(err)) from None
    except DecisionError as err:
        raise HTTPException(status_code=err.status, detail=str(err)) from None
    return {"result": result}
