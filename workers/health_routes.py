"""The operational endpoints: GET /healthz (answers only when Temporal does) and GET /metrics
(Prometheus text; refreshes the gauges counted from Temporal first, and still answers, with the
last values, when Temporal does not). The metric objects themselves are in `workers.metrics`."""

from __future__ import annotations

import asyncio
from contextlib import suppress

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from temporalio.service import RPCError

from workers.http_common import temporal_client
from workers.metrics import GATES_PENDING, OUTCOMES, RUN_OUTCOMES

router = APIRouter()


@router.get("/healthz")
async def healthz(request: Request) -> dict[str, str]:
    await temporal_client(request).service_client.check_health()
    return {"status": "ok"}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    client = temporal_client(request)
    query = "RemediationStatus = 'AwaitingApproval' AND ExecutionStatus = 'Running'"
    with suppress(RPCError):  # metrics still answer when Temporal does not
        pending, *finished = await asyncio.gather(
            client.count_workflows(query),
            *(client.count_workflows(f"RemediationStatus = '{s.value}'") for s in OUTCOMES),
        )
        GATES_PENDING.set(pending.count)
        for status, count in zip(OUTCOMES, finished, strict=True):
            RUN_OUTCOMES.labels(status.value).set(count.count)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
