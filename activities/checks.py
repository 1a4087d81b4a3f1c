"""The verification loop: run checks until they pass N times in a row or a deadline passes.

It polls inside one heartbeating activity, so a verification of any length adds a handful of
events to the workflow history, not one per poll. Progress (attempts, streak, the deadline)
rides on the heartbeat, so a retry on another worker keeps the original deadline. It
heartbeats while each check runs, after it, and while it waits between polls, so neither a
slow check nor a long interval can outlast the heartbeat timeout.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal, Protocol

import httpx
from pydantic import BaseModel, Field
from temporalio import activity

from activities import heartbeats
from activities.http.app_flag import check_app_writes
from activities.http.probes import health_url, probe_url, read_error_rate
from activities.models import ReadOnlyInput
from activities.mongo.connections import get_mongo_connection_usage
from activities.mongo.models import MongoTargetInput
from activities.postgres.models import TargetInput
from activities.postgres.read_only import check_writes
from activities.postgres.sessions import get_connection_usage
from activities.secrets.rotation import current_version_works

# The least a check is given, even when the verification's deadline is (nearly) reached.
MIN_CHECK_SECONDS = 5.0

CheckKind = Literal[
    "pg_usage_below",
    "mongo_usage_below",
    "http_healthy",
    "url_healthy",
    "error_rate_below",
    "writes_refused",
    "writes_accepted",
    "credential_works",
]


class CheckSpec(BaseModel):
    kind: CheckKind
    target: str
    threshold: float = 0.0
    # url_healthy: the URL; writes_*: the read-only mode ("postgres" or "app_flag").
    url: str = ""
    mode: str = ""

    def describe(self) -> str:
        if self.kind == "http_healthy":
            return f"{self.target} health endpoint answers 200"
        if self.kind == "url_healthy":
            return f"{self.url} answers 200"
        if self.kind == "error_rate_below":
            return f"{self.target} error rate below {self.threshold:.1%}"
        if self.kind == "writes_refused":
            return f"{self.target} refuses writes and serves reads ({self.mode})"
        if self.kind == "credential_works":
            return f"{self.target}'s current version is accepted"
        if self.kind == "writes_accepted":
            return f"{self.target} accepts writes ({self.mode})"
        return f"{self.target} connection usage below {self.threshold:.0%}"


class VerifyInput(BaseModel):
    checks: list[CheckSpec]
    required_consecutive: int = 3
    interval_seconds: float = 5.0
    deadline_seconds: float = 180.0


class VerifyPolicy(Protocol):
    """A runbook's verification settings, as each runbook's config section holds them."""

    @property
    def verify_consecutive(self) -> int: ...

    @property
    def verify_interval_seconds(self) -> float: ...

    @property
    def verify_deadline_seconds(self) -> float: ...


class CheckObservation(BaseModel):
    check: str
    passed: bool
    observed: str


class VerifyProgress(BaseModel):
    attempts: int = 0
    consecutive: int = 0
    elapsed_before: float = 0.0


class VerifyResult(BaseModel):
    passed: bool
    attempts: int
    consecutive: int
    elapsed_seconds: float
    last: list[CheckObservation] = Field(default_factory=list)


async def _write_check(check: CheckSpec) -> CheckObservation:
    params = ReadOnlyInput(target=check.target, enabled=check.kind == "writes_refused")
    if check.mode == "app_flag":
        result = await check_app_writes(params)
    else:
        result = await check_writes(params)
    wanted_refused = check.kind == "writes_refused"
    passed = result.writes_refused == wanted_refused and (result.reads_ok or not wanted_refused)
    observed = f"reads {'ok' if result.reads_ok else 'failing'}, writes " + (
        "refused" if result.writes_refused else "accepted"
    )
    return CheckObservation(check=check.describe(), passed=passed, observed=observed)


async def _run_check(client: httpx.AsyncClient, check: CheckSpec) -> CheckObservation:
    try:
        if check.kind in ("http_healthy", "url_healthy"):
            url = check.url or health_url(check.target)
            probe = await probe_url(client, url)
            observed = str(probe.status_code or probe.error)
            return CheckObservation(check=check.describe(), passed=probe.healthy, observed=observed)
        if check.kind == "error_rate_below":
            rate = await read_error_rate(client, check.target)
            return CheckObservation(
                check=check.describe(), passed=rate < check.threshold, observed=f"{rate:.2%}"
            )
        if check.kind in ("writes_refused", "writes_accepted"):
            return await _write_check(check)
        if check.kind == "credential_works":
            works = await current_version_works(check.target)
            return CheckObservation(
                check=check.describe(), passed=works, observed="accepted" if works else "refused"
            )
        if check.kind == "pg_usage_below":
            usage = (await get_connection_usage(TargetInput(target=check.target))).usage
        else:
            usage = (await get_mongo_connection_usage(MongoTargetInput(target=check.target))).usage
    except Exception as err:  # a failing check is an observation, not a crash of the loop
        return CheckObservation(check=check.describe(), passed=False, observed=str(err)[:200])
    return CheckObservation(
        check=check.describe(), passed=usage < check.threshold, observed=f"{usage:.1%}"
    )


async def _bounded_check(
    client: httpx.AsyncClient, check: CheckSpec, seconds_left: float, progress: VerifyProgress
) -> CheckObservation:
    """One check, heartbeating while it runs (its own timeouts can be longer than the
    heartbeat timeout), and given no longer than the verification has left (at least
    MIN_CHECK_SECONDS): a check that hangs is a failed observation, not a stalled loop."""
    budget = max(MIN_CHECK_SECONDS, seconds_left)
    try:
        return await heartbeats.while_running(
            asyncio.wait_for(_run_check(client, check), budget), progress.model_dump()
        )
    except TimeoutError:
        return CheckObservation(
            check=check.describe(), passed=False, observed=f"no answer within {budget:.0f}s"
        )


@activity.defn
async def verify_until_stable(params: VerifyInput) -> VerifyResult:
    info = activity.info()
    progress = VerifyProgress()
    if info.heartbeat_details:
        progress = VerifyProgress.model_validate(info.heartbeat_details[0])
    started = time.monotonic() - progress.elapsed_before
    last: list[CheckObservation] = []
    async with httpx.AsyncClient(timeout=5.0) as client:
        while True:
            last = []
            for check in params.checks:
                left = params.deadline_seconds - (time.monotonic() - started)
                last.append(await _bounded_check(client, check, left, progress))
                activity.heartbeat(progress.model_dump())
            progress.attempts += 1
            progress.consecutive = progress.consecutive + 1 if all(o.passed for o in last) else 0
            progress.elapsed_before = time.monotonic() - started
            activity.heartbeat(progress.model_dump())
            if progress.consecutive >= params.required_consecutive:
                break
            if progress.elapsed_before + params.interval_seconds > params.deadline_seconds:
                break
            await heartbeats.while_running(
                asyncio.sleep(params.interval_seconds), progress.model_dump()
            )
    return VerifyResult(
        passed=progress.consecutive >= params.required_consecutive,
        attempts=progress.attempts,
        consecutive=progress.consecutive,
        elapsed_seconds=round(progress.elapsed_before, 2),
        last=last,
    )
