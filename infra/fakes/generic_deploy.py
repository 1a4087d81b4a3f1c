"""A deploy tool behind the generic HTTP provider's contract (activities/deploy/generic.py).

Control API: `POST /_fake/scenario` with
`{"token", "deployments": [{"id", "created_at", "state", "commit"?, "healthy"?}],
  "current", "rate_limit_next", "retry_after_seconds", "fail_next_rollback",
  "switch_after_seconds", "on_switch_url"}`; `GET /_fake/calls`; `GET /_fake/state`.
When production switches release, `on_switch_url` (the demo app's `/debug/release`) is told
which release now serves and whether it is healthy.

Run: `python -m infra.fakes.generic_deploy --port 8091`.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
import uvicorn
from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

app = FastAPI(title="generic deploy tool (fake)")


class FakeRelease(BaseModel):
    id: str
    created_at: datetime
    state: str = "ready"
    commit: str | None = None
    message: str | None = None
    healthy: bool = True


class Scenario(BaseModel):
    token: str = ""  # empty: every request is refused until a scenario sets one
    deployments: list[FakeRelease] = Field(default_factory=list)
    current: str = ""
    rate_limit_next: int = 0
    retry_after_seconds: float = 1.0
    fail_next_rollback: bool = False
    switch_after_seconds: float = 0.0
    on_switch_url: str | None = None


class World:
    def __init__(self) -> None:
        self.scenario = Scenario()
        self.calls: list[dict[str, Any]] = []
        self.rollbacks: dict[str, dict[str, str]] = {}  # deployment id -> state/detail
        self.keys: set[str] = set()
        self.bad: set[str] = set()


world = World()


def _release(deployment_id: str) -> FakeRelease | None:
    return next((d for d in world.scenario.deployments if d.id == deployment_id), None)


def _view(release: FakeRelease) -> dict[str, Any]:
    return {
        "id": release.id,
        "created_at": release.created_at.isoformat(),
        "state": release.state,
        "commit": release.commit,
        "message": release.message,
        "good": release.id not in world.bad and release.state != "failed",
    }


@app.middleware("http")
async def gatekeeper(request: Request, call_next: Any) -> Any:
    if request.url.path.startswith("/_fake"):
        return await call_next(request)
    world.calls.append({"method": request.method, "path": request.url.path})
    if world.scenario.rate_limit_next > 0:
        world.scenario.rate_limit_next -= 1
        return JSONResponse(
            {"error": "rate limited"},
            status_code=429,
            headers={"Retry-After": str(world.scenario.retry_after_seconds)},
        )
    expected = f"Bearer {world.scenario.token}"
    given = request.headers.get("Authorization", "")
    if not world.scenario.token or not hmac.compare_digest(given, expected):
        return JSONResponse({"error": "unauthorized"}, status_code=401)
    return await call_next(request)


@app.get("/current")
async def current() -> JSONResponse:
    release = _release(world.scenario.current)
    if release is None:
        return JSONResponse({"error": "nothing deployed"}, status_code=404)
    return JSONResponse(_view(release))


@app.get("/deployments")
async def deployments(
    limit: Annotated[int, Query(ge=1, le=100)] = 20, cursor: str | None = None
) -> dict[str, Any]:
    ordered = sorted(world.scenario.deployments, key=lambda d: d.created_at, reverse=True)
    start = int(cursor or 0)
    page = ordered[start : start + limit]
    more = start + limit < len(ordered)
    return {
        "deployments": [_view(d) for d in page],
        "next_cursor": str(start + limit) if more else None,
    }


class RollbackRequest(BaseModel):
    deployment_id: str


@app.post("/rollback", status_code=202)
async def rollback(
    body: RollbackRequest, idempotency_key: Annotated[str, Header()] = ""
) -> JSONResponse:
    if _release(body.deployment_id) is None:
        return JSONResponse({"error": f"no deployment {body.deployment_id}"}, status_code=404)
    if idempotency_key and idempotency_key in world.keys:
        return JSONResponse(world.rollbacks[body.deployment_id], status_code=202)
    world.keys.add(idempotency_key)
    world.rollbacks[body.deployment_id] = {"state": "in_progress", "detail": "switching"}
    asyncio.get_running_loop().create_task(_switch(body.deployment_id))
    return JSONResponse(world.rollbacks[body.deployment_id], status_code=202)


@app.get("/rollback")
async def rollback_state(deployment_id: str) -> JSONResponse:
    state = world.rollbacks.get(deployment_id)
    if state is None:
        return JSONResponse({"error": f"no rollback to {deployment_id}"}, status_code=404)
    return JSONResponse(state)


@app.post("/restart")
async def restart() -> dict[str, str]:
    return {"restarted": world.scenario.current}


async def _switch(deployment_id: str) -> None:
    await asyncio.sleep(world.scenario.switch_after_seconds)
    if world.scenario.fail_next_rollback:
        world.scenario.fail_next_rollback = False
        world.rollbacks[deployment_id] = {"state": "failed", "detail": "health check failed"}
        return
    world.bad.add(world.scenario.current)
    world.scenario.current = deployment_id
    world.rollbacks[deployment_id] = {"state": "succeeded", "detail": f"{deployment_id} live"}
    await announce(world.scenario.on_switch_url, _release(deployment_id))


async def announce(url: str | None, release: FakeRelease | None) -> None:
    """Tell the demo app which release now serves (best effort, like a deploy webhook)."""
    if url is None or release is None:
        return
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            await client.post(url, json={"deployment_id": release.id, "good": release.healthy})
    except httpx.HTTPError:
        pass


@app.post("/_fake/scenario")
async def set_scenario(scenario: Scenario) -> dict[str, Any]:
    world.__init__()  # type: ignore[misc]
    world.scenario = scenario
    return {"ok": True}


@app.get("/_fake/calls")
async def calls() -> list[dict[str, Any]]:
    return world.calls


@app.get("/_fake/state")
async def state() -> dict[str, Any]:
    return {
        "current": world.scenario.current,
        "rollbacks": world.rollbacks,
        "rate_limit_left": world.scenario.rate_limit_next,
    }


def releases(
    count: int, bad_newest: int = 1, start: datetime | None = None
) -> list[dict[str, Any]]:
    """A scenario's history: `count` releases an hour apart, the newest `bad_newest` broken."""
    start = start or datetime.now(UTC) - timedelta(hours=count)
    return [
        {
            "id": f"rel-{i:03d}",
            "created_at": (start + timedelta(hours=i)).isoformat(),
            "state": "ready",
            "commit": f"{i:03d}" + "abcdef0" * 5,
            "healthy": i < count - bad_newest,
        }
        for i in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
