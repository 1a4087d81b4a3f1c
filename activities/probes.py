"""HTTP health probes."""

from __future__ import annotations

import time

import httpx
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.config import load_config


class ProbeInput(BaseModel):
    target: str
    timeout_seconds: float = 5.0


class ProbeResult(BaseModel):
    url: str
    healthy: bool
    status_code: int | None = None
    latency_ms: float
    error: str = ""


def health_url(target: str) -> str:
    url = load_config().target(target).health_url
    if not url:
        raise ApplicationError(
            f"target {target!r} has no health_url; add one to probe it", non_retryable=True
        )
    return url


async def probe_url(client: httpx.AsyncClient, url: str) -> ProbeResult:
    started = time.monotonic()
    try:
        response = await client.get(url)
    except httpx.HTTPError as err:
        return ProbeResult(
            url=url,
            healthy=False,
            latency_ms=round((time.monotonic() - started) * 1000, 1),
            error=type(err).__name__,
        )
    return ProbeResult(
        url=url,
        healthy=response.status_code == 200,
        status_code=response.status_code,
        latency_ms=round((time.monotonic() - started) * 1000, 1),
    )


@activity.defn
async def probe_health(params: ProbeInput) -> ProbeResult:
    async with httpx.AsyncClient(timeout=params.timeout_seconds) as client:
        return await probe_url(client, health_url(params.target))
