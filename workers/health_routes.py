"""The operational endpoints: GET /healthz (readiness: 200 only when Temporal answers, else
503 JSON, so a load balancer sends alerts to a replica that can take them), GET /livez
(liveness: 200 while the process serves HTTP, whatever Temporal does, so an orchestrator
does not restart the service for Temporal's outage), and GET /metrics (Prometheus text;
refreshes the gauges counted from Temporal first, and still answers, with the last values,
when Temporal does not). The metric objects themselves are in `workers.metrics`."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from datetime import timedelta

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.safety import SafetyQuery, SafetyStatus, safety_workflow_id
from workers.http_common import TEMPORAL_DOWN, ErrorBody, temporal_client, why_unreachable
from workers.metrics import GATES_PENDING, KILL_SWITCH, LEASES_HELD, OUTCOMES, RUN_OUTCOMES
from workflows.safety_envelope import Lease

router = APIRouter()


HEALTH_TIMEOUT = timedelta(seconds=3)


@router.get("/healthz", responses={503: {"model": ErrorBody}})
async def healthz(request: Request) -> dict[str, str]:
    try:
        await temporal_client(request).service_client.check_health(timeout=HEALTH_TIMEOUT)
    except TEMPORAL_DOWN as err:
        raise HTTPException(
            503,
            f"Temporal unreachable ({why_unreachable(err)}): alerts and decisions answer 503 "
            "until it is back; check the Temporal server and TEMPORAL_ADDRESS",
        ) from None
    return {"status": "ok"}


@router.get("/livez")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    client = temporal_client(request)
    query = "RemediationStatus = 'AwaitingApproval' AND ExecutionStatus = 'Running'"
    with suppress(*TEMPORAL_DOWN):  # metrics still answer when Temporal does not
        pending, *finished = await asyncio.gather(
            client.count_workflows(query),
            *(client.count_workflows(f"RemediationStatus = '{s.value}'") for s in OUTCOMES),
        )
        GATES_PENDING.set(pending.count)
        for status, count in zip(OUTCOMES, finished, strict=True):
            RUN_OUTCOMES.labels(status.value).set(count.count)
        await _envelope_state(client, request.app.state.settings.task_queue)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _envelope_state(client: Client, task_queue: str) -> None:
    """The kill switch and the leases held, from the envelope (not started for a scrape: no
    envelope yet means nothing paused and nothing held)."""
    handle = client.get_workflow_handle(safety_workflow_id(task_queue))
    try:
        status, leases = await asyncio.gather(
            handle.query("status", SafetyQuery(target="", runbook=""), result_type=SafetyStatus),
            handle.query("held_leases", result_type=dict[str, Lease]),
        )
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        status, leases = SafetyStatus(paused=False), {}
    KILL_SWITCH.set(1 if status.paused else 0)
    LEASES_HELD.set(len(leases))
