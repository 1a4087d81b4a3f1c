"""What every deploy provider speaks: deployments, rollback progress, and its errors.

A provider (Vercel, Railway, generic HTTP) is a small async class over one `httpx.AsyncClient`
that turns its vendor's API into these models. The Temporal activities in
`activities/deploy/activities.py` choose the provider from the target's config and never see a
vendor shape.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal, Protocol

from pydantic import BaseModel
from temporalio.exceptions import ApplicationError

DeployState = Literal["ready", "building", "failed", "canceled", "removed", "unknown"]
RollbackState = Literal["in_progress", "succeeded", "failed"]


class Deployment(BaseModel):
    """One production release, as the plan and the report show it."""

    id: str
    created_at: datetime
    state: DeployState
    # The vendor's own word for the state (READY, SUCCESS, REMOVED, ...), for the report.
    raw_state: str
    url: str | None = None
    commit: str | None = None
    message: str | None = None
    # False when the release is known bad: it failed, or production was rolled back away
    # from it. Such a release is never picked as "last known good".
    good: bool = True

    def describe(self) -> str:
        commit = f" {self.commit[:8]}" if self.commit else ""
        return f"{self.id}{commit} ({self.created_at:%Y-%m-%d %H:%M} UTC)"


class RollbackProgress(BaseModel):
    state: RollbackState
    detail: str = ""


class DeployProvider(Protocol):
    """The four things a runbook needs from a deploy platform.

    - `current()`: the deployment production serves now.
    - `history(limit)`: production deployments, newest first, following the vendor's
      pagination until `limit` are collected or there are no more.
    - `rollback(to, key)`: make `to` serve production. Starting the same rollback twice does
      no harm: callers check `current()` first, and `key` is sent where the vendor takes one.
    - `rollback_progress(to)`: poll after `rollback`.
    - `restart()`: restart (or redeploy) the current release in place.
    """

    async def current(self) -> Deployment: ...

    async def history(self, limit: int) -> list[Deployment]: ...

    async def rollback(self, to: Deployment, key: str) -> None: ...

    async def rollback_progress(self, to: Deployment) -> RollbackProgress: ...

    async def restart(self, key: str) -> None: ...


class ProviderError(ApplicationError):
    """A provider call failed. Retryable unless the fix is in the config or the token."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = True,
        retry_after: timedelta | None = None,
    ) -> None:
        super().__init__(
            message,
            type="DeployProviderError",
            non_retryable=not retryable,
            next_retry_delay=retry_after,
        )
        self.status = status


def error_for_status(
    vendor: str,
    status: int,
    what: str,
    body: str = "",
    retry_after: str | None = None,
    *,
    config_hint: str = "the target's [deploy] config",
) -> ProviderError:
    """Map an HTTP error status to a clear, correctly retryable error.

    401/403 are the token's fault and 404 the config's: retrying cannot help, and the message
    says what to fix. 429 carries the vendor's `Retry-After` so Temporal's next attempt waits
    exactly that long (the activity retry policy bounds the total). 5xx are retried.
    `config_hint` names the config section the 401/404 messages point at, so providers
    configured elsewhere (API key providers) send the reader to the right place.
    """
    detail = f" ({body[:200]})" if body else ""
    if status == 401:
        return ProviderError(
            f"{vendor} refused the token for {what}: 401 unauthorized; check the token "
            f"reference in {config_hint}{detail}",
            status=status,
            retryable=False,
        )
    if status == 403:
        return ProviderError(
            f"{vendor} token may not {what}: 403 forbidden; give the token access to this "
            f"project/team{detail}",
            status=status,
            retryable=False,
        )
    if status == 404:
        return ProviderError(
            f"{vendor} found nothing for {what}: 404; check the ids in {config_hint}{detail}",
            status=status,
            retryable=False,
        )
    if status == 429:
        delay = parse_retry_after(retry_after)
        return ProviderError(
            f"{vendor} rate-limited {what}: 429, retry after {delay.total_seconds():.0f}s",
            status=status,
            retry_after=delay,
        )
    return ProviderError(
        f"{vendor} failed to {what}: HTTP {status}{detail}",
        status=status,
        retryable=status >= 500 or status in (408, 409),
    )


def parse_retry_after(value: str | None, default: float = 5.0) -> timedelta:
    """`Retry-After` in seconds (an HTTP date is rare from APIs; treat it as the default)."""
    try:
        seconds = float(value) if value is not None else default
    except ValueError:
        seconds = default
    return timedelta(seconds=min(max(seconds, 0.5), 300.0))
