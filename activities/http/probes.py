"""HTTP health probes."""

from __future__ import annotations

import asyncio
import time

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.config import load_config
from activities.http.models import AssessInput, DownAssessment, ProbeInput, ProbeResult, ProbeRound


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


async def read_error_rate(client: httpx.AsyncClient, target: str) -> float:
    """The target's error rate from its `metrics_url`: JSON `{"error_rate": 0.02}`, or the
    first `error_rate` sample of a Prometheus text exposition."""
    url = load_config().target(target).metrics_url
    if not url:
        raise ApplicationError(f"target {target!r} has no metrics_url", non_retryable=True)
    response = await client.get(url)
    response.raise_for_status()
    if response.headers.get("content-type", "").startswith("application/json"):
        return float(response.json()["error_rate"])
    for line in response.text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name == "error_rate":
            return float(line.rsplit(" ", 1)[1])
    raise ValueError(f"{url} exposes no error_rate sample")


@activity.defn
async def assess_down(params: AssessInput) -> DownAssessment:
    """Runbook 000 step 1, "verify it is really down": every probe URL of the target, several
    rounds apart. Down only when at least `down_rounds` rounds had a failure, so one blip or
    one flap is not a reason to roll production back."""
    urls = load_config().target(params.target).all_probe_urls()
    if not urls:
        raise ApplicationError(
            f"target {params.target!r} has no health_url or probe_urls to check",
            type="ConfigError",
            non_retryable=True,
        )
    rounds: list[ProbeRound] = []
    async with httpx.AsyncClient(timeout=params.timeout_seconds) as client:
        for number in range(1, params.rounds + 1):
            results = [await probe_url(client, url) for url in urls]
            rounds.append(ProbeRound(round=number, results=results))
            activity.heartbeat(number)
            if number < params.rounds:
                await asyncio.sleep(params.interval_seconds)
    failed = sum(1 for r in rounds if r.failed)
    return DownAssessment(down=failed >= params.down_rounds, failed_rounds=failed, rounds=rounds)
