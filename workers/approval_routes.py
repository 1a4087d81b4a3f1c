"""The approvals HTTP API: GET /approvals (open gates, from one visibility listing, in pages
on request), POST /approvals/{workflow_id}/approve
or /reject (a decision on the plan the caller reviewed), and POST /runs/{workflow_id}/end-hold
(end a read-only run's hold early). Callers authenticate with `Authorization: Bearer <token>`;
the decisions themselves are made by `workers.approvals`, shared with the CLI."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field, TypeAdapter

from activities.approval_auth import AuthenticationFailedError
from activities.config import load_config
from workers.api_shapes import NEXT_PAGE_HEADER as NEXT_PAGE_HEADER
from workers.approvals import DecisionError, decide, end_hold, open_gate
from workers.gate_listing import MAX_PAGE_SIZE, PageTokenError, gates_page, pending_gates
from workers.http_common import (
    TEMPORAL_DOWN,
    ErrorBody,
    bearer_token,
    caller_identity,
    temporal_client,
    temporal_unavailable,
)
from workers.metrics import DECISIONS, GATES_PENDING
from workflows.models import ApprovalDecision, GateView

router = APIRouter()
_GATES = TypeAdapter(list[GateView])
logger = logging.getLogger(__name__)
# The response header carrying the token of the next page (absent on the last page). The body
# stays the list of gates it always was, so a client that does not page reads it unchanged.


class DecisionBody(BaseModel):
    plan_id: str = Field(min_length=1, max_length=64, description="the plan you reviewed")
    reason: str = Field(default="", max_length=2000)


class EndHoldBody(BaseModel):
    reason: str = Field(default="", max_length=2000)


@router.get(
    "/approvals",
    response_model=list[GateView],
    responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}},
)
async def list_approvals(
    request: Request,
    authorization: Annotated[str, Header()] = "",
    page_size: Annotated[
        int | None, Query(ge=1, le=MAX_PAGE_SIZE, description="gates per page (default: all)")
    ] = None,
    next_page_token: Annotated[
        str | None,
        Query(max_length=4096, description=f"from the previous page's {NEXT_PAGE_HEADER}"),
    ] = None,
) -> Response:
    """The open gates with their plans. With `page_size`, one page; the response's
    Next-Page-Token header (absent on the last page) is the next one's `next_page_token`.
    A page may hold fewer gates than its size: follow the token until it is absent."""
    caller_identity(authorization)
    client = temporal_client(request)
    try:
        if page_size is None and next_page_token is None:
            gates = await pending_gates(client)
            GATES_PENDING.set(len(gates))
            return _gates_response(gates, None)
        page = await gates_page(client, page_size or MAX_PAGE_SIZE, next_page_token)
    except PageTokenError as err:
        raise HTTPException(status_code=400, detail=str(err)) from None
    except TEMPORAL_DOWN as err:
        raise temporal_unavailable(err) from None
    return _gates_response(page.gates, page.next_page_token)


def _gates_response(gates: list[GateView], next_page_token: str | None) -> Response:
    """Serialized once, straight to JSON bytes: FastAPI's own path (validate the models
    again, dump them to dicts, then json.dumps) took longer than the listing itself at
    1,000 gates."""
    headers = {NEXT_PAGE_HEADER: next_page_token} if next_page_token is not None else None
    return Response(_GATES.dump_json(gates), media_type="application/json", headers=headers)


@router.get(
    "/approvals/{workflow_id}",
    responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
async def run_gate(
    request: Request, workflow_id: str, authorization: Annotated[str, Header()] = ""
) -> GateView | None:
    """The gate open on this run now (null between gates); 404 no such run, 409 it ended."""
    caller_identity(authorization)
    try:
        return await open_gate(temporal_client(request), workflow_id)
    except DecisionError as err:
        raise HTTPException(status_code=err.status, detail=str(err)) from None
    except TEMPORAL_DOWN as err:
        raise temporal_unavailable(err) from None


@router.post(
    "/approvals/{workflow_id}/{kind}",
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 404: {"model": ErrorBody},
               409: {"model": ErrorBody}, 503: {"model": ErrorBody}},
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
    token = bearer_token(authorization)
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
        logger.warning("refused %s of %s: %s", kind, workflow_id, err)
        raise HTTPException(status_code=err.status, detail=str(err)) from None
    except TEMPORAL_DOWN as err:
        DECISIONS.labels(kind, "unavailable").inc()
        raise temporal_unavailable(err) from None
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
    token = bearer_token(authorization)
    client = temporal_client(request)
    try:
        result = await end_hold(client, load_config(), token, workflow_id, body.reason)
    except AuthenticationFailedError as err:
        raise HTTPException(status_code=401, detail=str(err)) from None
    except DecisionError as err:
        raise HTTPException(status_code=err.status, detail=str(err)) from None
    except TEMPORAL_DOWN as err:
        raise temporal_unavailable(err) from None
    return {"result": result}
