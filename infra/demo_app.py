"""The demo target: a tiny "orders API" backed by Postgres, shaped like the runbooks' apps.

- `GET /health` opens a fresh connection per request, as a serverless function does, so it
  fails with "too many clients" when the database's connection slots are exhausted.
- `POST /debug/leak?connections=N` makes the app leak N idle connections (what a pool bug or a
  storm of lambdas does); the README uses it to exhaust the database.
- `POST /admin/restart` (bearer token, `Idempotency-Key`) "restarts" the app: closes every
  connection it holds. A key seen before is answered with `already_done` and does nothing.

Run: `uvicorn infra.demo_app:app` with DEMO_DATABASE_URL and DEMO_ADMIN_TOKEN set.
"""

from __future__ import annotations

import hmac
import os
import time
from typing import Annotated, Any

import psycopg
from fastapi import FastAPI, Header, HTTPException, Query
from fastapi.responses import JSONResponse

app = FastAPI(title="orders-api (remediation demo target)")

_leaked: list[psycopg.AsyncConnection[Any]] = []
_restarts: dict[str, float] = {}
_started_at = time.time()


def _dsn() -> str:
    return os.environ["DEMO_DATABASE_URL"]


@app.get("/health")
async def health() -> JSONResponse:
    try:
        async with await psycopg.AsyncConnection.connect(
            _dsn(), connect_timeout=3, application_name="orders-api-health"
        ) as conn:
            await conn.execute("SELECT 1")
    except psycopg.OperationalError as err:
        return JSONResponse(
            {"status": "unhealthy", "error": str(err).strip().splitlines()[-1][:200]},
            status_code=503,
        )
    return JSONResponse({"status": "ok", "leaked_connections": len(_leaked)})


@app.post("/debug/leak")
async def leak(connections: Annotated[int, Query(ge=1, le=1000)] = 10) -> dict[str, Any]:
    opened, error = 0, ""
    for _ in range(connections):
        try:
            conn = await psycopg.AsyncConnection.connect(
                _dsn(), connect_timeout=3, application_name="orders-api"
            )
        except psycopg.OperationalError as err:
            error = str(err).strip().splitlines()[-1][:200]
            break
        _leaked.append(conn)
        opened += 1
    return {"opened": opened, "held": len(_leaked), "stopped_by": error}


@app.post("/admin/restart")
async def restart(
    authorization: Annotated[str, Header()] = "",
    idempotency_key: Annotated[str, Header()] = "",
) -> dict[str, Any]:
    expected = f"Bearer {os.environ.get('DEMO_ADMIN_TOKEN', '')}"
    if not os.environ.get("DEMO_ADMIN_TOKEN") or not hmac.compare_digest(authorization, expected):
        raise HTTPException(status_code=401, detail="a valid admin bearer token is required")
    if idempotency_key and idempotency_key in _restarts:
        return {"already_done": True, "restarted_at": _restarts[idempotency_key]}
    closed = len(_leaked)
    while _leaked:
        await _leaked.pop().close()
    now = time.time()
    if idempotency_key:
        _restarts[idempotency_key] = now
    return {"already_done": False, "restarted_at": now, "closed_connections": closed}


@app.get("/")
async def index() -> dict[str, Any]:
    return {"app": "orders-api", "up_seconds": round(time.time() - _started_at, 1)}
