"""What every deploy provider speaks: deployments and rollback progress (its errors are
`activities/http/errors.py`, shared with the key providers).

A provider (Vercel, Railway, generic HTTP) is a small async class over one `httpx.AsyncClient`
that turns its vendor's API into these models. The Temporal activities in
`activities/deploy/releases.py` choose the provider from the target's config and never see a
vendor shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel

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


class FindDeploymentsInput(BaseModel):
    target: str
    history_limit: int = 50


class DeploymentSituation(BaseModel):
    provider: str
    current: Deployment
    last_good: Deployment | None = None
    # Newer-than-last-good releases passed over, and why (for the plan and the report).
    skipped: list[str] = []
    examined: int = 0


class RollbackInput(BaseModel):
    target: str
    to: Deployment
    # The same for every attempt of one approved plan.
    idempotency_key: str
    # The deployment production served when the plan was made: if it serves another now (a
    # hotfix went out meanwhile), the plan is stale and nothing is switched.
    expected_current: str = ""
    deadline_seconds: float = 300.0
    poll_seconds: float = 2.0


class RollbackResult(BaseModel):
    already_current: bool
    progress: RollbackProgress
    elapsed_seconds: float


class RestartServiceInput(BaseModel):
    target: str
    idempotency_key: str


class RestartAppInput(BaseModel):
    target: str
    # Same key for every attempt of one approved plan: the hook restarts at most once per key.
    idempotency_key: str


class RestartAppResult(BaseModel):
    url: str
    status_code: int
    already_done: bool
