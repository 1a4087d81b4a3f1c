"""The operational endpoints: GET /healthz (readiness: 200 only when Temporal answers, else
503 JSON, so a load balancer sends alerts to a replica that can take them), GET /livez
(liveness: 200 while the process serves HTTP, whatever Temporal does, so an orchestrator
does not restart the service for Temporal's outage), and GET /metrics (Prometheus text;
refreshes the gauges counted from Temporal first (`workers.scraped_metrics`), and still answers,
with the last values, when Temporal does not). The metric objects themselves are in
`workers.metrics`."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from workers.http_common import TEMPORAL_DOWN, ErrorBody, temporal_client, why_unreachable
from workers.scraped_metrics import refresh

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
    # Metrics still answer when Temporal does not (with the gauges' last values).
    await refresh(temporal_client(request), request.app.state.settings.task_queue)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
