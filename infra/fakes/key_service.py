"""A vendor's API key service behind the generic key provider's contract
(activities/keys/generic.py, activities/keys/config.py).

Endpoints: `POST /v1/keys` (create, `Idempotency-Key`), `GET /v1/keys?limit=&cursor=` (list),
`POST /v1/keys/{id}/revoke`, `GET /v1/verify` (authenticated with the key under test).

Control API: `POST /_fake/scenario` with
`{"admin_token", "keys": [{"id", "value", "created_at", "state"?, "name"?}], "page_size",
  "rate_limit_next", "retry_after_seconds", "fail_next_create", "lose_next_create",
  "forbidden_tokens"}` resets the world; `GET /_fake/calls` lists every call as `{"method",
"path", "query", "idempotency_key", "auth", "status"}`; `GET /_fake/state` shows the keys
(`{"id", "state", "last4", "name", "created_at"}`) and the counters left. Neither ever shows a
key value or a token: `auth` says `admin`, `forbidden`, `wrong`, `none`, or for verify the id of
the key presented (`unknown` when none matches).

`fail_next_create` answers 500 before creating anything; `lose_next_create` creates the key and
then answers 500, as when the answer is lost on the way back (the same `Idempotency-Key` then
returns that key).

Run: `python -m infra.fakes.key_service --port 8094`.
"""

from __future__ import annotations

import argparse
import hmac
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

app = FastAPI(title="API key service (fake)")

ADMIN_PATHS = ("/v1/keys",)
VERIFY_PATH = "/v1/verify"


class FakeKey(BaseModel):
    id: str
    value: str
    created_at: datetime
    state: Literal["active", "revoked"] = "active"
    name: str | None = None


class Scenario(BaseModel):
    admin_token: str = ""  # empty: every admin request is refused until a scenario sets one
    keys: list[FakeKey] = Field(default_factory=list)
    page_size: int = Field(default=2, ge=1)
    rate_limit_next: int = 0
    retry_after_seconds: float = 1.0
    fail_next_create: bool = False
    lose_next_create: bool = False
    forbidden_tokens: list[str] = Field(default_factory=list)


class World:
    def __init__(self, scenario: Scenario | None = None) -> None:
        self.scenario = scenario or Scenario()
        self.keys: dict[str, FakeKey] = {key.id: key for key in self.scenario.keys}
        self.calls: list[dict[str, Any]] = []
        # Idempotency-Key -> (key id, requested name)
        self.idempotency: dict[str, tuple[str, str]] = {}


world = World()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _bearer(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    return header.removeprefix("Bearer ") if header.startswith("Bearer ") else None


def _key_with_value(value: str) -> FakeKey | None:
    return next((key for key in world.keys.values() if _same(value, key.value)), None)


def _auth(request: Request) -> str:
    """Who is calling, in words that never contain a secret."""
    token = _bearer(request)
    if token is None:
        return "none"
    if request.url.path == VERIFY_PATH:
        key = _key_with_value(token)
        return key.id if key else "unknown"
    if any(_same(token, forbidden) for forbidden in world.scenario.forbidden_tokens):
        return "forbidden"
    if world.scenario.admin_token and _same(token, world.scenario.admin_token):
        return "admin"
    return "wrong"


def _view(key: FakeKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "created_at": key.created_at.isoformat(),
        "state": key.state,
        "last4": key.value[-4:],
        "name": key.name,
    }


@app.middleware("http")
async def gatekeeper(request: Request, call_next: Any) -> Any:
    if request.url.path.startswith("/_fake"):
        return await call_next(request)
    auth = _auth(request)
    call: dict[str, Any] = {
        "method": request.method,
        "path": request.url.path,
        "query": dict(request.query_params),
        "idempotency_key": request.headers.get("Idempotency-Key"),
        "auth": auth,
    }
    world.calls.append(call)
    response = await _gate(request, auth, call_next)
    call["status"] = response.status_code
    return response


async def _gate(request: Request, auth: str, call_next: Any) -> Any:
    if world.scenario.rate_limit_next > 0:
        world.scenario.rate_limit_next -= 1
        return JSONResponse(
            {"error": "rate limited"},
            status_code=429,
            headers={"Retry-After": f"{world.scenario.retry_after_seconds:g}"},
        )
    if request.url.path != VERIFY_PATH:
        if auth == "forbidden":
            return JSONResponse({"error": "this token may not manage keys"}, status_code=403)
        if auth != "admin":
            return JSONResponse({"error": "invalid admin token"}, status_code=401)
    return await call_next(request)


class CreateRequest(BaseModel):
    name: str


@app.post("/v1/keys")
async def create_key(
    body: CreateRequest, idempotency_key: Annotated[str, Header()] = ""
) -> JSONResponse:
    if not idempotency_key:
        return JSONResponse({"error": "an Idempotency-Key header is required"}, status_code=400)
    if idempotency_key in world.idempotency:
        key_id, name = world.idempotency[idempotency_key]
        if name != body.name:
            return JSONResponse(
                {"error": "Idempotency-Key reused with different parameters"}, status_code=422
            )
        key = world.keys[key_id]
        return JSONResponse({**_view(key), "key": key.value}, status_code=200)
    if world.scenario.fail_next_create:
        world.scenario.fail_next_create = False
        return JSONResponse({"error": "internal error"}, status_code=500)
    key = FakeKey(
        id=f"key_{secrets.token_hex(8)}",
        value=f"sk_live_{secrets.token_hex(24)}",
        created_at=datetime.now(UTC),
        name=body.name,
    )
    world.keys[key.id] = key
    world.idempotency[idempotency_key] = (key.id, body.name)
    if world.scenario.lose_next_create:
        world.scenario.lose_next_create = False
        return JSONResponse({"error": "upstream timeout"}, status_code=500)
    return JSONResponse({**_view(key), "key": key.value}, status_code=201)


@app.get("/v1/keys")
async def list_keys(
    limit: Annotated[int, Query(ge=1, le=100)] = 10, cursor: str | None = None
) -> dict[str, Any]:
    ordered = sorted(world.keys.values(), key=lambda key: (key.created_at, key.id))
    size = min(limit, world.scenario.page_size)
    start = int(cursor or 0)
    page = ordered[start : start + size]
    more = start + size < len(ordered)
    return {
        "data": [_view(key) for key in page],
        "next_cursor": str(start + size) if more else None,
    }


@app.post("/v1/keys/{key_id}/revoke")
async def revoke_key(key_id: str) -> JSONResponse:
    key = world.keys.get(key_id)
    if key is None:
        return JSONResponse({"error": f"no key {key_id}"}, status_code=404)
    key.state = "revoked"
    return JSONResponse({"id": key.id, "state": key.state})


@app.get(VERIFY_PATH)
async def verify(request: Request) -> JSONResponse:
    token = _bearer(request)
    key = _key_with_value(token) if token else None
    if key is None or key.state != "active":
        return JSONResponse({"error": "invalid API key"}, status_code=401)
    return JSONResponse({"key_id": key.id})


@app.post("/_fake/scenario")
async def set_scenario(scenario: Scenario) -> dict[str, Any]:
    global world
    world = World(scenario)
    return {"ok": True}


@app.get("/_fake/calls")
async def calls() -> list[dict[str, Any]]:
    return world.calls


@app.get("/_fake/state")
async def state() -> dict[str, Any]:
    return {
        "rate_limit_left": world.scenario.rate_limit_next,
        "fail_next_create": world.scenario.fail_next_create,
        "lose_next_create": world.scenario.lose_next_create,
        "keys": [
            _view(key)
            for key in sorted(world.keys.values(), key=lambda key: (key.created_at, key.id))
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--port", type=int, default=8094)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
