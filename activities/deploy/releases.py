"""Temporal activities over whichever deploy provider a target's `[deploy]` names.

- `find_deployments`: the current production release and the last known-good one before it.
- `rollback_deployment`: make a release serve production and wait until it does. Idempotent:
  it checks first, starts the switch at most once per attempt chain (the heartbeat remembers
  it), and sends one idempotency key for every attempt of one approved plan.
- `restart_service`: restart the current release (Railway restart, a generic restart hook).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.config import (
    GenericDeploy,
    RailwayDeploy,
    VercelDeploy,
    load_config,
)
from activities.deploy.generic import GenericProvider
from activities.deploy.models import (
    Deployment,
    DeploymentSituation,
    DeployProvider,
    FindDeploymentsInput,
    RestartServiceInput,
    RollbackInput,
    RollbackResult,
)
from activities.deploy.railway import RailwayProvider
from activities.deploy.vercel import VercelProvider
from activities.secrets.references import resolve_secret

# A release in these states once served (or can serve) production.
ROLLBACK_TARGET_STATES = ("ready", "removed")


@asynccontextmanager
async def provider_for(target: str) -> AsyncIterator[DeployProvider]:
    deploy = load_config().target(target).deploy
    if deploy is None:
        raise ApplicationError(
            f"target {target!r} has no [targets.{target}.deploy]; add provider = "
            '"vercel" | "railway" | "generic" and its ids',
            type="ConfigError",
            non_retryable=True,
        )
    async with httpx.AsyncClient(timeout=deploy.timeout_seconds) as client:
        if isinstance(deploy, VercelDeploy):
            yield VercelProvider(deploy, resolve_secret(deploy.token), client)
        elif isinstance(deploy, RailwayDeploy):
            yield RailwayProvider(deploy, resolve_secret(deploy.token), client)
        else:
            assert isinstance(deploy, GenericDeploy)
            token = resolve_secret(deploy.token) if deploy.token is not None else None
            yield GenericProvider(deploy, token, client)


def pick_last_good(
    current: Deployment, history: list[Deployment]
) -> tuple[Deployment | None, list[str]]:
    """The newest release older than the current one that is not known bad. Never a guess:
    a release that failed, was canceled, never finished, or was rolled back away from is
    skipped (and named); if none qualifies there is no candidate."""
    skipped: list[str] = []
    for release in sorted(history, key=lambda d: d.created_at, reverse=True):
        if release.id == current.id or release.created_at >= current.created_at:
            continue
        if release.state not in ROLLBACK_TARGET_STATES or not release.good:
            why = "known bad" if not release.good else release.raw_state or release.state
            skipped.append(f"{release.id} ({why})")
            continue
        return release, skipped
    return None, skipped


@activity.defn
async def find_deployments(params: FindDeploymentsInput) -> DeploymentSituation:
    deploy = load_config().target(params.target).deploy
    async with provider_for(params.target) as provider:
        current = await provider.current()
        history = await provider.history(params.history_limit)
    last_good, skipped = pick_last_good(current, history)
    return DeploymentSituation(
        provider=deploy.provider if deploy else "",
        current=current,
        last_good=last_good,
        skipped=skipped,
        examined=len(history),
    )


@activity.defn
async def rollback_deployment(params: RollbackInput) -> RollbackResult:
    started = time.monotonic()
    details = activity.info().heartbeat_details
    requested = bool(details and details[0] == "requested")
    async with provider_for(params.target) as provider:
        progress = await provider.rollback_progress(params.to)
        if progress.state == "succeeded" and not requested:
            return RollbackResult(already_current=True, progress=progress, elapsed_seconds=0.0)
        if not requested:
            await _check_still_serving(provider, params)
            await provider.rollback(params.to, params.idempotency_key)
            activity.heartbeat("requested")
        while True:
            progress = await provider.rollback_progress(params.to)
            activity.heartbeat("requested")
            if progress.state == "succeeded":
                break
            if progress.state == "failed":
                raise ApplicationError(
                    f"the platform reports the rollback to {params.to.id} failed: "
                    f"{progress.detail or 'no detail'}",
                    type="RollbackFailed",
                    non_retryable=True,
                )
            if time.monotonic() - started > params.deadline_seconds:
                raise ApplicationError(
                    f"rollback to {params.to.id} did not finish within "
                    f"{params.deadline_seconds:.0f}s (last: {progress.detail or progress.state})",
                    type="RollbackTimedOut",
                    non_retryable=True,
                )
            await asyncio.sleep(params.poll_seconds)
    return RollbackResult(
        already_current=False,
        progress=progress,
        elapsed_seconds=round(time.monotonic() - started, 2),
    )


async def _check_still_serving(provider: DeployProvider, params: RollbackInput) -> None:
    """The plan's precondition, checked just before switching: production still serves the
    deployment the plan was made from. Otherwise the plan is stale (non-retryable)."""
    if not params.expected_current:
        return
    current = await provider.current()
    if current.id not in (params.expected_current, params.to.id):
        raise ApplicationError(
            f"production now serves {current.describe()}, not {params.expected_current} that "
            f"the plan to switch to {params.to.id} was made from; nothing was switched",
            type="PlanDrift",
            non_retryable=True,
        )


@activity.defn
async def restart_service(params: RestartServiceInput) -> None:
    async with provider_for(params.target) as provider:
        await provider.restart(params.idempotency_key)
