"""A local fake of Railway's public GraphQL API: the operations the Railway deploy provider sends.

Shapes follow https://docs.railway.com/integrations/api (endpoint `POST /graphql/v2`, bearer
token, rate-limit headers), https://docs.railway.com/integrations/api/manage-deployments and
the introspected schema the Railway CLI ships (`src/gql/schema.json` in railwayapp/cli):

- `deployments(input: DeploymentListInput!, first, after)`: a Relay connection, newest first:
  `{edges: [{cursor, node: Deployment}], pageInfo: {hasNextPage, hasPreviousPage, startCursor,
  endCursor}}`. `input` takes `serviceId`, `environmentId`, `projectId` and `status: {in,
  notIn}` (a `DeploymentStatusInput`).
- `deployment(id)`: one `Deployment` (`id, status, createdAt, updatedAt, statusUpdatedAt, url,
  staticUrl, meta, canRollback, canRedeploy, deploymentStopped, projectId, serviceId,
  environmentId, snapshotId, suggestAddServiceDomain`).
- `deploymentRollback(id): Boolean!`, `deploymentRestart(id): Boolean!`,
  `deploymentRedeploy(id, usePreviousImageTag): Deployment!`,
  `serviceInstanceRedeploy(serviceId, environmentId): Boolean!`.

The fake parses the GraphQL document itself (operations, aliases, arguments, variables, nested
selections; not fragments or directives), validates the selection against the types above and
answers only the fields asked for. Validation errors are HTTP 400 `{"errors": [...]}`; execution
errors are HTTP 200 `{"data": null, "errors": [{"message", "locations", "path"}]}`.

Control API (not Railway's): `POST /_fake/scenario` (see `Scenario`), `GET /_fake/calls`
(`[{"operation", "variables"}]` of every API request, `operation` being the root field, several
joined by ","), `GET /_fake/state`.

Choices where the docs are silent:

- No credentials at all (neither `Authorization` nor `Project-Access-Token`) is HTTP 401; a
  token other than the scenario's is HTTP 200 with the GraphQL error "Not Authorized".
- An unknown service, environment or project in `input` is the GraphQL error "Service not
  found" (resp. "Environment not found", "Project not found"); an unknown deployment id is
  "Deployment not found"; a bad `after` cursor is "Invalid cursor".
- Cursors are opaque (base64url). `first` defaults to 50 and is capped at 100.
- A rollback or redeploy creates a new deployment (INITIALIZING, then DEPLOYING, then SUCCESS
  after `switch_after_seconds`) with the source's `meta` plus `"reason": "rollback"` (resp.
  `"redeploy"`); when it succeeds the previously active deployment becomes REMOVED. Railway's
  docs do not say how a rollback's deployment is marked; `meta.reason` is this fake's choice.
- `canRollback` is true for REMOVED deployments unless the scenario says otherwise (to model a
  deployment past the plan's retention, or one that crashed before it was removed). Rolling
  back to a deployment without it is the GraphQL error "Deployment cannot be rolled back".
- `deploymentRestart` is accepted only for the active deployment; it counts restarts (see
  `/_fake/state`) and creates no deployment.
- Every answer carries `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`
  (epoch seconds); a rate-limited one is HTTP 429 with `Retry-After` (seconds) as well.

Run: `python -m infra.fakes.railway --port 8788`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import re
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

app = FastAPI(title="fake Railway public API")

ACTIVE = ("SUCCESS", "SLEEPING")
REDEPLOYABLE = ("SUCCESS", "SLEEPING", "FAILED", "CRASHED", "REMOVED")
STOPPED = ("REMOVED", "FAILED", "CRASHED", "SKIPPED")
DEFAULT_PAGE, MAX_PAGE = 50, 100
HOURLY_LIMIT = 1000


class FakeDeployment(BaseModel):
    id: str
    createdAt: datetime
    status: str = "SUCCESS"
    meta: dict[str, Any] = Field(default_factory=dict)  # commitHash, commitMessage, ...
    staticUrl: str | None = None
    url: str | None = None
    # None: true for REMOVED deployments (Railway: "only deployments with canRollback").
    canRollback: bool | None = None
    # What the app does when this release serves (sent to `on_switch_url`).
    healthy: bool = True
    updatedAt: datetime | None = None
    restarts: int = 0


class Scenario(BaseModel):
    token: str = "railway-test-token"  # noqa: S105 - a fake's default, not a secret
    project_id: str = "prj-fake"
    service_id: str = "svc-fake"
    environment_id: str = "env-fake"
    deployments: list[FakeDeployment] = Field(default_factory=list)
    # Answer the next N API requests 429.
    rate_limit_next: int = 0
    retry_after_seconds: int = 2
    # The next rollback/redeploy is accepted, then its deployment ends FAILED.
    fail_next_rollback: bool = False
    switch_after_seconds: float = 0.0
    on_switch_url: str | None = None


@dataclass
class _State:
    scenario: Scenario = field(default_factory=Scenario)
    generation: int = 0
    deployments: dict[str, FakeDeployment] = field(default_factory=dict)
    rate_limit_left: int = 0
    fail_next: bool = False
    requests: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


STATE = _State()


# -- a small GraphQL parser -----------------------------------------------------------------

_TOKENS = re.compile(
    r"""
    (?P<skip>[\s,\ufeff]+|\#[^\n]*)
    |(?P<spread>\.\.\.)
    |(?P<punct>[!$():=@\[\]{}|&])
    |(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    |(?P<name>[_A-Za-z][_0-9A-Za-z]*)
    |(?P<string>"(?:[^"\\\n]|\\.)*")
    """,
    re.VERBOSE,
)


class GraphQLError(Exception):
    """An error in Railway's shape; `status` 400 for a bad document, 200 when executing."""

    def __init__(self, message: str, where: Selection | None = None, status: int = 200) -> None:
        super().__init__(message)
        self.message, self.where, self.status = message, where, status

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message}
        if self.where is not None:
            error["locations"] = [{"line": self.where.line, "column": self.where.column}]
            error["path"] = [self.where.key]
        return error


@dataclass
class Selection:
    name: str
    alias: str | None
    args: dict[str, Any]
    fields: list[Selection] | None
    line: int
    column: int

    @property
    def key(self) -> str:
        return self.alias or self.name


@dataclass
class Operation:
    kind: str  # "query" | "mutation"
    fields: list[Selection]


@dataclass
class _Token:
    kind: str
    value: str
    pos: int


def _tokenize(source: str) -> list[_Token]:
    tokens, pos = [], 0
    while pos < len(source):
        match = _TOKENS.match(source, pos)
        if match is None:
            raise GraphQLError(f"Syntax Error: Unexpected character {source[pos]!r}.", status=400)
        kind = match.lastgroup or "skip"
        if kind != "skip":
            tokens.append(_Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(_Token("eof", "", len(source)))
    return tokens


class _Parser:
    def __init__(self, source: str, variables: dict[str, Any]) -> None:
        self.source, self.variables = source, variables
        self.tokens, self.at = _tokenize(source), 0

    def parse(self) -> Operation:
        kind = "query"
        if self._peek().value in ("query", "mutation", "subscription"):
            kind = self._next().value
            if self._peek().kind == "name":
                self._next()
            if self._peek().value == "(":
                self._skip_balanced("(", ")")
        operation = Operation(kind, self._selection_set())
        if self._peek().kind != "eof":
            raise GraphQLError("The fake answers one operation per request.", status=400)
        return operation

    def _peek(self) -> _Token:
        return self.tokens[self.at]

    def _next(self) -> _Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def _expect(self, value: str) -> None:
        token = self._next()
        if token.value != value:
            found = token.value or "<EOF>"
            raise GraphQLError(f'Syntax Error: Expected "{value}", found "{found}".', status=400)

    def _skip_balanced(self, opening: str, closing: str) -> None:
        depth = 0
        while True:
            token = self._next()
            depth += (token.value == opening) - (token.value == closing)
            if depth == 0 or token.kind == "eof":
                return

    def _selection_set(self) -> list[Selection]:
        self._expect("{")
        fields = []
        while self._peek().value != "}":
            if self._peek().kind == "spread":
                raise GraphQLError("The fake does not support fragments.", status=400)
            fields.append(self._field())
        self._expect("}")
        return fields

    def _field(self) -> Selection:
        token = self._next()
        if token.kind != "name":
            raise GraphQLError(f'Syntax Error: Unexpected "{token.value}".', status=400)
        alias, name = None, token.value
        if self._peek().value == ":":
            self._next()
            alias, name = name, self._next().value
        args = self._arguments() if self._peek().value == "(" else {}
        if self._peek().value == "@":
            raise GraphQLError("The fake does not support directives.", status=400)
        fields = self._selection_set() if self._peek().value == "{" else None
        line, column = _location(self.source, token.pos)
        return Selection(name, alias, args, fields, line, column)

    def _arguments(self) -> dict[str, Any]:
        self._expect("(")
        args = {}
        while self._peek().value != ")":
            name = self._next().value
            self._expect(":")
            args[name] = self._value()
        self._expect(")")
        return args

    def _value(self) -> Any:
        token = self._next()
        if token.value == "$":
            return self.variables.get(self._next().value)
        if token.kind == "string":
            return json.loads(token.value)
        if token.kind == "number":
            return json.loads(token.value)
        if token.value == "[":
            items = []
            while self._peek().value != "]":
                items.append(self._value())
            self._next()
            return items
        if token.value == "{":
            obj = {}
            while self._peek().value != "}":
                key = self._next().value
                self._expect(":")
                obj[key] = self._value()
            self._next()
            return obj
        return {"true": True, "false": False, "null": None}.get(token.value, token.value)


def _location(source: str, pos: int) -> tuple[int, int]:
    line = source.count("\n", 0, pos) + 1
    return line, pos - (source.rfind("\n", 0, pos) + 1) + 1


# -- the part of Railway's schema the fake serves -------------------------------------------

_DEPLOYMENT_FIELDS = (
    "id status createdAt updatedAt statusUpdatedAt url staticUrl meta canRollback canRedeploy "
    "deploymentStopped projectId serviceId environmentId snapshotId suggestAddServiceDomain"
)
# type -> field -> the field's object type (None: a scalar, its GraphQL type in _SCALARS).
_TYPES: dict[str, dict[str, str | None]] = {
    "Query": {"deployments": "QueryDeploymentsConnection", "deployment": "Deployment"},
    "Mutation": {
        "deploymentRollback": None,
        "deploymentRedeploy": "Deployment",
        "deploymentRestart": None,
        "serviceInstanceRedeploy": None,
    },
    "QueryDeploymentsConnection": {
        "edges": "QueryDeploymentsConnectionEdge",
        "pageInfo": "PageInfo",
    },
    "QueryDeploymentsConnectionEdge": {"cursor": None, "node": "Deployment"},
    "PageInfo": dict.fromkeys(("hasNextPage", "hasPreviousPage", "startCursor", "endCursor")),
    "Deployment": dict.fromkeys(_DEPLOYMENT_FIELDS.split()),
}


def _validate(fields: list[Selection], type_name: str) -> None:
    for selection in fields:
        if selection.name == "__typename":
            continue
        if selection.name not in _TYPES[type_name]:
            message = f'Cannot query field "{selection.name}" on type "{type_name}".'
            raise GraphQLError(message, selection, status=400)
        child = _TYPES[type_name][selection.name]
        if child is None and selection.fields is not None:
            message = f'Field "{selection.name}" must not have a selection since it is a scalar.'
            raise GraphQLError(message, selection, status=400)
        if child is not None and selection.fields is None:
            message = (
                f'Field "{selection.name}" of type "{child}" must have a selection of subfields.'
            )
            raise GraphQLError(message, selection, status=400)
        if child is not None and selection.fields is not None:
            _validate(selection.fields, child)


def _project(value: Any, fields: list[Selection] | None) -> Any:
    if fields is None or value is None:
        return value
    if isinstance(value, list):
        return [_project(item, fields) for item in value]
    return {f.key: _project(value[f.name], f.fields) for f in fields}


# -- scenario data ---------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _newest_first() -> list[FakeDeployment]:
    return sorted(STATE.deployments.values(), key=lambda d: _utc(d.createdAt), reverse=True)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _active() -> FakeDeployment | None:
    return next((d for d in _newest_first() if d.status in ACTIVE), None)


def _can_rollback(d: FakeDeployment) -> bool:
    return d.canRollback if d.canRollback is not None else d.status == "REMOVED"


def _node(d: FakeDeployment) -> dict[str, Any]:
    scenario = STATE.scenario
    return {
        "__typename": "Deployment",
        "id": d.id,
        "status": d.status,
        "createdAt": _iso(d.createdAt),
        "updatedAt": _iso(d.updatedAt or d.createdAt),
        "statusUpdatedAt": _iso(d.updatedAt or d.createdAt),
        "url": d.url,
        "staticUrl": d.staticUrl,
        "meta": d.meta or None,
        "canRollback": _can_rollback(d),
        "canRedeploy": d.status in REDEPLOYABLE,
        "deploymentStopped": d.status in STOPPED,
        "projectId": scenario.project_id,
        "serviceId": scenario.service_id,
        "environmentId": scenario.environment_id,
        "snapshotId": None,
        "suggestAddServiceDomain": False,
    }


def _cursor(deployment_id: str) -> str:
    return base64.urlsafe_b64encode(f"deployment:{deployment_id}".encode()).decode()


def _cursor_index(rows: list[FakeDeployment], cursor: object, where: Selection) -> int:
    try:
        decoded = base64.urlsafe_b64decode(str(cursor).encode()).decode()
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    ids = [d.id for d in rows]
    deployment_id = decoded.removeprefix("deployment:")
    if not decoded.startswith("deployment:") or deployment_id not in ids:
        raise GraphQLError("Invalid cursor", where)
    return ids.index(deployment_id)


def _find(deployment_id: object, where: Selection) -> FakeDeployment:
    found = STATE.deployments.get(str(deployment_id))
    if found is None:
        raise GraphQLError("Deployment not found", where)
    return found


def _check_scope(args: dict[str, Any], where: Selection) -> None:
    scenario = STATE.scenario
    for key, expected, noun in (
        ("serviceId", scenario.service_id, "Service"),
        ("environmentId", scenario.environment_id, "Environment"),
        ("projectId", scenario.project_id, "Project"),
    ):
        if args.get(key) is not None and args[key] != expected:
            raise GraphQLError(f"{noun} not found", where)


def _status_matches(d: FakeDeployment, status: object) -> bool:
    if not isinstance(status, dict):
        return True
    included = status.get("in")
    excluded = status.get("notIn") or []
    return (included is None or d.status in included) and d.status not in excluded


# -- resolvers ------------------------------------------------------------------------------


def _deployments(where: Selection) -> dict[str, Any]:
    args = where.args
    if args.get("last") is not None or args.get("before") is not None:
        raise GraphQLError("The fake pages forward only (first/after).", where)
    scope = args.get("input") or {}
    _check_scope(scope, where)
    rows = [d for d in _newest_first() if _status_matches(d, scope.get("status"))]
    start = _cursor_index(rows, args["after"], where) + 1 if args.get("after") else 0
    first = args.get("first")
    if first is not None and (not isinstance(first, int) or first < 0):
        raise GraphQLError("`first` must be a non-negative integer", where)
    page = rows[start : start + min(DEFAULT_PAGE if first is None else first, MAX_PAGE)]
    edges = [
        {"__typename": "QueryDeploymentsConnectionEdge", "cursor": _cursor(d.id), "node": _node(d)}
        for d in page
    ]
    return {
        "__typename": "QueryDeploymentsConnection",
        "edges": edges,
        "pageInfo": {
            "__typename": "PageInfo",
            "hasNextPage": start + len(page) < len(rows),
            "hasPreviousPage": start > 0,
            "startCursor": edges[0]["cursor"] if edges else None,
            "endCursor": edges[-1]["cursor"] if edges else None,
        },
    }


def _deployment(where: Selection) -> dict[str, Any]:
    return _node(_find(where.args.get("id"), where))


def _rollback(where: Selection) -> bool:
    source = _find(where.args.get("id"), where)
    if not _can_rollback(source):
        raise GraphQLError("Deployment cannot be rolled back", where)
    _start_switch(source, "rollback")
    return True


def _redeploy(where: Selection) -> dict[str, Any]:
    source = _find(where.args.get("id"), where)
    if source.status not in REDEPLOYABLE:
        raise GraphQLError("Deployment cannot be redeployed", where)
    return _node(_start_switch(source, "redeploy"))


def _restart(where: Selection) -> bool:
    deployment = _find(where.args.get("id"), where)
    active = _active()
    if active is None or active.id != deployment.id:
        raise GraphQLError("Only the active deployment can be restarted", where)
    deployment.restarts += 1
    deployment.updatedAt = datetime.now(UTC)
    return True


def _service_instance_redeploy(where: Selection) -> bool:
    _check_scope(where.args, where)
    source = _active() or next(iter(_newest_first()), None)
    if source is None:
        raise GraphQLError("No deployment to redeploy", where)
    _start_switch(source, "redeploy")
    return True


_RESOLVERS: dict[str, Callable[[Selection], Any]] = {
    "deployments": _deployments,
    "deployment": _deployment,
    "deploymentRollback": _rollback,
    "deploymentRedeploy": _redeploy,
    "deploymentRestart": _restart,
    "serviceInstanceRedeploy": _service_instance_redeploy,
}


# -- switches: a rollback/redeploy is a new deployment --------------------------------------


def _start_switch(source: FakeDeployment, reason: str) -> FakeDeployment:
    fail, STATE.fail_next = STATE.fail_next, False
    created = FakeDeployment(
        id=str(uuid.uuid4()),
        createdAt=datetime.now(UTC),
        status="INITIALIZING",
        meta={**source.meta, "reason": reason},
        staticUrl=source.staticUrl,
        url=source.url,
        healthy=source.healthy,
    )
    STATE.deployments[created.id] = created
    delay = STATE.scenario.switch_after_seconds
    _schedule(_finish_switch(STATE.generation, created.id, fail, delay))
    return created


def _schedule(job: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(job)
    STATE.tasks.add(task)
    task.add_done_callback(STATE.tasks.discard)


def _set_status(deployment: FakeDeployment, status: str) -> None:
    deployment.status = status
    deployment.updatedAt = datetime.now(UTC)


async def _finish_switch(generation: int, deployment_id: str, fail: bool, delay: float) -> None:
    await asyncio.sleep(delay / 2)
    created = STATE.deployments.get(deployment_id)
    if STATE.generation != generation or created is None:
        return  # a new scenario replaced this one
    _set_status(created, "DEPLOYING")
    await asyncio.sleep(delay / 2)
    if STATE.generation != generation:
        return
    if fail:
        _set_status(created, "FAILED")
        return
    for other in STATE.deployments.values():
        if other.status in ACTIVE and other.id != deployment_id:
            _set_status(other, "REMOVED")
    _set_status(created, "SUCCESS")
    await _notify(created)


async def _notify(serving: FakeDeployment) -> None:
    """Best effort: tell the app which release now serves."""
    url = STATE.scenario.on_switch_url
    if not url:
        return
    payload = {"deployment_id": serving.id, "good": serving.healthy}
    record: dict[str, Any] = {"url": url, "payload": payload}
    STATE.notifications.append(record)
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            record["status"] = (await client.post(url, json=payload)).status_code
    except httpx.HTTPError as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"


# -- the endpoint ---------------------------------------------------------------------------


def _rate_headers() -> dict[str, str]:
    remaining = max(HOURLY_LIMIT - STATE.requests, 0)
    return {
        "X-RateLimit-Limit": str(HOURLY_LIMIT),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(int(time.time()) + 3600),
    }


def _answer(body: dict[str, Any], status: int = 200, **headers: str) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={**_rate_headers(), **headers})


def _credentials(request: Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        return header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    return request.headers.get("Project-Access-Token")


def _parse(payload: object) -> Operation:
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        raise GraphQLError("Must provide query string.", status=400)
    variables = payload.get("variables") or {}
    if not isinstance(variables, dict):
        raise GraphQLError("Variables must be an object.", status=400)
    return _Parser(payload["query"], variables).parse()


def _record(payload: object, operation: Operation | None) -> None:
    names = ",".join(f.name for f in operation.fields) if operation else None
    variables = payload.get("variables") if isinstance(payload, dict) else None
    STATE.calls.append({"operation": names, "variables": variables or {}})


def _execute(operation: Operation, token: str) -> dict[str, Any]:
    root = {"query": "Query", "mutation": "Mutation"}.get(operation.kind)
    if root is None:
        raise GraphQLError("The fake answers queries and mutations only.", status=400)
    _validate(operation.fields, root)
    data: dict[str, Any] = {}
    for selection in operation.fields:
        if selection.name == "__typename":
            data[selection.key] = root
            continue
        if token != STATE.scenario.token:
            raise GraphQLError("Not Authorized", selection)
        data[selection.key] = _project(_RESOLVERS[selection.name](selection), selection.fields)
    return {"data": data}


@app.post("/graphql/v2")
async def graphql(request: Request) -> JSONResponse:
    STATE.requests += 1
    try:
        payload: object = json.loads(await request.body())
    except ValueError:
        payload = None
    operation: Operation | None = None
    problem: GraphQLError | None = None
    try:
        operation = _parse(payload)
    except GraphQLError as exc:
        problem = exc
    _record(payload, operation)
    if STATE.rate_limit_left > 0:
        STATE.rate_limit_left -= 1
        return _rate_limited()
    token = _credentials(request)
    if token is None:
        return _answer({"errors": [{"message": "Not Authorized"}]}, 401)
    if problem is not None or operation is None:
        return _answer({"errors": [(problem or GraphQLError("Bad request")).body()]}, 400)
    try:
        return _answer(_execute(operation, token))
    except GraphQLError as exc:
        body: dict[str, Any] = {"errors": [exc.body()]}
        if exc.status == 200:
            body["data"] = None
        return _answer(body, exc.status)


def _rate_limited() -> JSONResponse:
    seconds = STATE.scenario.retry_after_seconds
    headers = {
        "Retry-After": str(seconds),
        "X-RateLimit-Limit": str(HOURLY_LIMIT),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(int(time.time()) + seconds),
    }
    message = f"Rate limit exceeded. Retry after {seconds} seconds."
    return JSONResponse({"errors": [{"message": message}]}, status_code=429, headers=headers)


# -- control API ----------------------------------------------------------------------------


@app.post("/_fake/scenario")
async def set_scenario(scenario: Scenario) -> dict[str, Any]:
    for task in list(STATE.tasks):
        task.cancel()
    STATE.scenario = scenario
    STATE.generation += 1
    STATE.deployments = {d.id: d.model_copy(deep=True) for d in scenario.deployments}
    STATE.rate_limit_left = scenario.rate_limit_next
    STATE.fail_next = scenario.fail_next_rollback
    STATE.requests = 0
    STATE.calls = []
    STATE.notifications = []
    active = _active()
    return {"ok": True, "active": active.id if active else None}


@app.get("/_fake/calls")
async def get_calls() -> list[dict[str, Any]]:
    return STATE.calls


@app.get("/_fake/state")
async def get_state() -> dict[str, Any]:
    active = _active()
    return {
        "active": active.id if active else None,
        "deployments": [
            {**_node(d), "healthy": d.healthy, "restarts": d.restarts} for d in _newest_first()
        ],
        "rate_limit_left": STATE.rate_limit_left,
        "fail_next_rollback": STATE.fail_next,
        "notifications": STATE.notifications,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="A local fake of Railway's public GraphQL API.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
