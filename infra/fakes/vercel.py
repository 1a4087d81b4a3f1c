"""A local fake of the Vercel REST API: the endpoints the Vercel deploy provider calls.

Shapes follow https://vercel.com/docs/rest-api (bearer token, `teamId` query parameter, errors
as `{"error": {"code", "message"}}`):

- `GET /v9/projects/{idOrName}`: the project, with `targets.production` (the deployment
  production serves) and `lastAliasRequest` (`fromDeploymentId`, `toDeploymentId`, `jobStatus`,
  `requestedAt`, `type`).
- `GET /v6/deployments?projectId=&target=&limit=&until=&since=`: newest first, as
  `{"deployments": [...], "pagination": {"count", "next", "prev"}}`; `next` is the `created`
  (ms) of the page's last item, null on the last page.
- `GET /v13/deployments/{idOrUrl}`: one deployment, by id or hostname.
- `POST /v1/projects/{projectId}/rollback/{deploymentId}` (also under `/v9/`, the path the
  Vercel CLI uses): instant rollback, 201 with no body.
- `POST /v10/projects/{projectId}/promote/{deploymentId}`: promote, 202 with no body.
- `POST /v13/deployments` with `{"name", "deploymentId", "target", "meta"}`: redeploy.

Control API (not Vercel's): `POST /_fake/scenario` (see `Scenario`), `GET /_fake/calls`
(`[{"method", "path", "query"}]` of every API request, `/_fake` excluded) and `GET /_fake/state`.

Choices where the docs are silent:

- A missing or unknown token is answered 401 with the documented "Not authorized" body; a
  known token listed in `forbidden_tokens` is answered 403.
- A project that belongs to a team is not found (404) without `?teamId=`; a `teamId` other than
  the scenario's is answered 403.
- A rollback or promotion while another is pending answers 409 `conflict`. Rolling back needs
  a READY production deployment (else 400).
- A switch (rollback, promote, redeploy) takes `switch_after_seconds`; then production moves
  and, when `on_switch_url` is set, the fake POSTs `{"deployment_id", "good"}` there.
- `X-RateLimit-Reset` is sent in UTC epoch seconds, like the `reset` of the documented
  `rate_limited` error body.

Run: `python -m infra.fakes.vercel --port 8787`.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

app = FastAPI(title="fake Vercel REST API")


class FakeDeployment(BaseModel):
    uid: str
    created: int  # ms since the epoch
    state: str = "READY"
    meta: dict[str, str] = Field(default_factory=dict)
    url: str | None = None  # a hostname; default `<project>-<uid>.vercel.app`
    target: str | None = "production"
    # What the app does when this release serves production (sent to `on_switch_url`).
    healthy: bool = True


class Scenario(BaseModel):
    project_id: str = "prj_fake"
    project_name: str = "web"
    token: str = "vercel-test-token"  # noqa: S105 - a fake's default, not a secret
    # Valid tokens without access to this team/project: answered 403.
    forbidden_tokens: list[str] = Field(default_factory=list)
    team_id: str | None = None
    deployments: list[FakeDeployment] = Field(default_factory=list)
    # uid of the deployment production serves; default the newest READY production one.
    production: str | None = None
    # Seeds the project's `lastAliasRequest`.
    last_alias_request: dict[str, Any] | None = None
    # Answer the next N API requests 429.
    rate_limit_next: int = 0
    rate_limit_retry_after_seconds: int = 2
    # False: send only the X-RateLimit-* headers, no Retry-After.
    rate_limit_send_retry_after: bool = True
    # The next rollback/promote is accepted, then its job reports `failed`.
    fail_next_rollback: bool = False
    switch_after_seconds: float = 0.0
    on_switch_url: str | None = None


@dataclass
class _State:
    scenario: Scenario = field(default_factory=Scenario)
    generation: int = 0
    deployments: dict[str, FakeDeployment] = field(default_factory=dict)
    production: str | None = None
    last_alias_request: dict[str, Any] | None = None
    rate_limit_left: int = 0
    fail_next_switch: bool = False
    calls: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


STATE = _State()


class VercelError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def _error_response(error: VercelError, extra: dict[str, Any] | None = None) -> JSONResponse:
    body = {"error": {"code": error.code, "message": error.message, **(extra or {})}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


@app.exception_handler(VercelError)
async def _vercel_error(_: Request, exc: VercelError) -> JSONResponse:
    return _error_response(exc)


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 405:
        return _error_response(VercelError(405, "method_unknown", "Method not allowed"))
    return _error_response(VercelError(exc.status_code, "not_found", "The page was not found"))


@app.exception_handler(RequestValidationError)
async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    return _error_response(VercelError(400, "bad_request", f"Invalid request: {exc.errors()}"))


# -- middleware: record calls, rate limiting ------------------------------------------------


@app.middleware("http")
async def _record_and_limit(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    if request.url.path.startswith("/_fake"):
        return await call_next(request)
    STATE.calls.append(
        {"method": request.method, "path": request.url.path, "query": dict(request.query_params)}
    )
    if STATE.rate_limit_left > 0:
        STATE.rate_limit_left -= 1
        return _rate_limited()
    return await call_next(request)


def _rate_limited() -> JSONResponse:
    seconds = STATE.scenario.rate_limit_retry_after_seconds
    reset = int(time.time()) + seconds
    headers = {
        "X-RateLimit-Limit": "100",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(reset),
    }
    if STATE.scenario.rate_limit_send_retry_after:
        headers["Retry-After"] = str(seconds)
    limit = {"remaining": 0, "reset": reset, "resetMs": reset * 1000, "total": 100}
    error = VercelError(
        429, "rate_limited", f"The rate limit of 100 exceeded. Try again in {seconds}s", headers
    )
    return _error_response(error, {"limit": limit})


# -- auth and lookups -----------------------------------------------------------------------


def _authorize(request: Request) -> None:
    scenario = STATE.scenario
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
    if not token or token not in (scenario.token, *scenario.forbidden_tokens):
        raise VercelError(401, "forbidden", "Not authorized")
    if token in scenario.forbidden_tokens:
        raise VercelError(403, "forbidden", "You don't have permission to access this resource")
    team = request.query_params.get("teamId")
    if team is not None and team != scenario.team_id:
        raise VercelError(403, "forbidden", f"Not authorized for team {team}")


def _project_or_404(request: Request, id_or_name: str, *, by_name: bool = True) -> None:
    scenario = STATE.scenario
    names = (scenario.project_id, scenario.project_name) if by_name else (scenario.project_id,)
    in_scope = scenario.team_id is None or request.query_params.get("teamId") == scenario.team_id
    if id_or_name not in names or not in_scope:
        raise VercelError(404, "not_found", f"Project not found: {id_or_name}")


def _deployment_or_404(id_or_url: str) -> FakeDeployment:
    host = id_or_url.removeprefix("https://").removeprefix("http://")
    for deployment in STATE.deployments.values():
        if id_or_url == deployment.uid or host == _host(deployment):
            return deployment
    raise VercelError(404, "not_found", f"Could not find the deployment: {id_or_url}")


def _host(deployment: FakeDeployment) -> str:
    return deployment.url or f"{STATE.scenario.project_name}-{deployment.uid[-8:]}.vercel.app"


def _owner() -> str:
    return STATE.scenario.team_id or "user_fake"


# -- shapes ---------------------------------------------------------------------------------


def _list_item(d: FakeDeployment) -> dict[str, Any]:
    scenario = STATE.scenario
    return {
        "uid": d.uid,
        "name": scenario.project_name,
        "projectId": scenario.project_id,
        "url": _host(d),
        "created": d.created,
        "createdAt": d.created,
        "source": "git",
        "state": d.state,
        "readyState": d.state,
        "type": "LAMBDAS",
        "creator": {"uid": "user_fake", "username": "fake"},
        "inspectorUrl": f"https://vercel.com/fake/{scenario.project_name}/{d.uid}",
        "meta": d.meta,
        "target": d.target,
    }


def _full(d: FakeDeployment) -> dict[str, Any]:
    scenario = STATE.scenario
    return {
        "id": d.uid,
        "name": scenario.project_name,
        "projectId": scenario.project_id,
        "ownerId": _owner(),
        "url": _host(d),
        "createdAt": d.created,
        "readyState": d.state,
        "status": d.state,
        "target": d.target,
        "meta": d.meta,
        "type": "LAMBDAS",
        "version": 2,
        "regions": ["iad1"],
        "public": False,
        "creator": {"uid": "user_fake", "username": "fake"},
        "alias": [f"{scenario.project_name}.vercel.app"] if d.uid == STATE.production else [],
        "aliasAssigned": d.uid == STATE.production,
    }


def _project() -> dict[str, Any]:
    scenario = STATE.scenario
    production = STATE.deployments.get(STATE.production or "")
    return {
        "id": scenario.project_id,
        "name": scenario.project_name,
        "accountId": _owner(),
        "createdAt": min((d.created for d in STATE.deployments.values()), default=0),
        "updatedAt": int(time.time() * 1000),
        "targets": {"production": _full(production)} if production else {},
        "lastAliasRequest": STATE.last_alias_request,
        "lastRollbackTarget": None,
        "latestDeployments": [_full(d) for d in _newest_first()[:5]],
    }


def _newest_first() -> list[FakeDeployment]:
    return sorted(STATE.deployments.values(), key=lambda d: d.created, reverse=True)


# -- Vercel endpoints -----------------------------------------------------------------------


@app.get("/v9/projects/{id_or_name}")
async def get_project(request: Request, id_or_name: str) -> dict[str, Any]:
    _authorize(request)
    _project_or_404(request, id_or_name)
    return _project()


@app.get("/v6/deployments")
async def list_deployments(
    request: Request,
    projectId: str | None = None,
    target: str | None = None,
    limit: int = 20,
    until: int | None = None,
    since: int | None = None,
) -> dict[str, Any]:
    _authorize(request)
    if projectId is not None:
        _project_or_404(request, projectId)
    rows = [
        d
        for d in _newest_first()
        if (target is None or d.target == target)
        and (until is None or d.created < until)
        and (since is None or d.created > since)
    ]
    page = rows[: max(1, min(limit, 100))]
    more = len(rows) > len(page)
    return {
        "deployments": [_list_item(d) for d in page],
        "pagination": {
            "count": len(page),
            "next": page[-1].created if page and more else None,
            "prev": page[0].created if page else None,
        },
    }


@app.get("/v13/deployments/{id_or_url}")
async def get_deployment(request: Request, id_or_url: str) -> dict[str, Any]:
    _authorize(request)
    if STATE.scenario.team_id and request.query_params.get("teamId") != STATE.scenario.team_id:
        raise VercelError(404, "not_found", f"Could not find the deployment: {id_or_url}")
    return _full(_deployment_or_404(id_or_url))


@app.post("/v1/projects/{project_id}/rollback/{deployment_id}", status_code=201)
@app.post("/v9/projects/{project_id}/rollback/{deployment_id}", status_code=201)
async def rollback(request: Request, project_id: str, deployment_id: str) -> Response:
    to = _switch_target(request, project_id, deployment_id)
    if to.target != "production":
        raise VercelError(400, "bad_request", "Only production deployments can be rolled back to")
    _start_switch(to, "rollback")
    return Response(status_code=201)


@app.post("/v10/projects/{project_id}/promote/{deployment_id}", status_code=202)
async def promote(request: Request, project_id: str, deployment_id: str) -> Response:
    _start_switch(_switch_target(request, project_id, deployment_id), "promote")
    return Response(status_code=202)


class CreateDeployment(BaseModel):
    name: str
    deploymentId: str | None = None
    target: str | None = None
    meta: dict[str, str] = Field(default_factory=dict)


@app.post("/v13/deployments")
async def create_deployment(request: Request, body: CreateDeployment) -> dict[str, Any]:
    _authorize(request)
    _project_or_404(request, body.name)
    if body.deploymentId is None:
        raise VercelError(400, "bad_request", "The fake only redeploys: `deploymentId` is needed")
    source = _deployment_or_404(body.deploymentId)
    created = FakeDeployment(
        uid="dpl_" + secrets.token_hex(12),
        created=int(time.time() * 1000),
        state="BUILDING",
        meta={**source.meta, **body.meta},
        target=body.target,
        healthy=source.healthy,
    )
    STATE.deployments[created.uid] = created
    _schedule(_finish_build(STATE.generation, created.uid, STATE.scenario.switch_after_seconds))
    return _full(created)


# -- switches -------------------------------------------------------------------------------


def _switch_target(request: Request, project_id: str, deployment_id: str) -> FakeDeployment:
    _authorize(request)
    _project_or_404(request, project_id, by_name=False)
    to = _deployment_or_404(deployment_id)
    if to.state != "READY":
        raise VercelError(400, "bad_request", f"Deployment {to.uid} is not READY ({to.state})")
    pending = STATE.last_alias_request
    if pending and pending.get("jobStatus") in ("pending", "in-progress"):
        raise VercelError(409, "conflict", "A rollback or promotion is already in progress")
    return to


def _start_switch(to: FakeDeployment, kind: str) -> None:
    fail, STATE.fail_next_switch = STATE.fail_next_switch, False
    STATE.last_alias_request = {
        "fromDeploymentId": STATE.production,
        "toDeploymentId": to.uid,
        "jobStatus": "in-progress",
        "requestedAt": int(time.time() * 1000),
        "type": kind,
    }
    _schedule(_finish_switch(STATE.generation, to.uid, fail, STATE.scenario.switch_after_seconds))


def _schedule(job: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(job)
    STATE.tasks.add(task)
    task.add_done_callback(STATE.tasks.discard)


async def _finish_switch(generation: int, to: str, fail: bool, delay: float) -> None:
    await asyncio.sleep(delay)
    request = STATE.last_alias_request
    if STATE.generation != generation or request is None:
        return  # a new scenario replaced this one
    if fail:
        request["jobStatus"] = "failed"
        return
    STATE.production = to
    request["jobStatus"] = "succeeded"
    await _notify(to)


async def _finish_build(generation: int, uid: str, delay: float) -> None:
    await asyncio.sleep(delay)
    deployment = STATE.deployments.get(uid)
    if STATE.generation != generation or deployment is None:
        return
    deployment.state = "READY"
    if deployment.target == "production":
        STATE.production = uid
        await _notify(uid)


async def _notify(uid: str) -> None:
    """Best effort: tell the app which release production now serves."""
    url = STATE.scenario.on_switch_url
    if not url:
        return
    payload = {"deployment_id": uid, "good": STATE.deployments[uid].healthy}
    record: dict[str, Any] = {"url": url, "payload": payload}
    STATE.notifications.append(record)
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            record["status"] = (await client.post(url, json=payload)).status_code
    except httpx.HTTPError as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"


# -- control API ----------------------------------------------------------------------------


@app.post("/_fake/scenario")
async def set_scenario(scenario: Scenario) -> dict[str, Any]:
    for task in list(STATE.tasks):
        task.cancel()
    deployments = {d.uid: d.model_copy(deep=True) for d in scenario.deployments}
    STATE.scenario = scenario
    STATE.generation += 1
    STATE.deployments = deployments
    STATE.production = scenario.production or _default_production(deployments)
    STATE.last_alias_request = scenario.last_alias_request
    STATE.rate_limit_left = scenario.rate_limit_next
    STATE.fail_next_switch = scenario.fail_next_rollback
    STATE.calls = []
    STATE.notifications = []
    return {"ok": True, "production": STATE.production}


def _default_production(deployments: dict[str, FakeDeployment]) -> str | None:
    ready = [d for d in deployments.values() if d.state == "READY" and d.target == "production"]
    return max(ready, key=lambda d: d.created).uid if ready else None


@app.get("/_fake/calls")
async def get_calls() -> list[dict[str, Any]]:
    return STATE.calls


@app.get("/_fake/state")
async def get_state() -> dict[str, Any]:
    return {
        "project": _project(),
        "production": STATE.production,
        "last_alias_request": STATE.last_alias_request,
        "deployments": [d.model_dump() for d in _newest_first()],
        "rate_limit_left": STATE.rate_limit_left,
        "fail_next_rollback": STATE.fail_next_switch,
        "notifications": STATE.notifications,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="A local fake of the Vercel REST API.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
