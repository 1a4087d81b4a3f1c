"""The demo target: a tiny "orders API" backed by Postgres, shaped like the runbooks' apps.

- `GET /health` opens a fresh connection per request, as a serverless function does, so it
  fails with "too many clients" when the database's connection slots are exhausted.
- `POST /debug/leak?connections=N` makes the app leak N idle connections (what a pool bug or a
  storm of lambdas does); the README uses it to exhaust the database.
- `POST /admin/restart` (bearer token, `Idempotency-Key`) "restarts" the app: closes every
  connection it holds. A key seen before is answered with `already_done` and does nothing.
- `GET|PUT /admin/maintenance` (bearer token): the read-only flag, `{"read_only": bool}`.
  While it is on, `POST /orders` and `POST /orders/probe` answer 423.
- `GET /orders` reads, `POST /orders` writes an order, `POST /orders/probe` tries a write in a
  transaction it rolls back (the read_only runbook's write probe). A database in read-only
  mode makes both writes answer 503.
- `GET /metrics`: `error_rate` (Prometheus text), 1.0 while a bad release serves.
- `POST /debug/release` (`{"deployment_id", "good"}`) is what the fake deploy platforms call
  when production switches release: a bad release makes `/health` answer 500.
- Credentials from AWS Secrets Manager, as a real app reads them: with DEMO_DB_SECRET_ARN set,
  the database login comes from that secret (AWS's JSON shape `{"host", "port", "dbname",
  "username", "password"}`) instead of DEMO_DATABASE_URL; with DEMO_API_KEY_SECRET_ARN and
  DEMO_API_VERIFY_URL set, `/health` also calls the vendor with the key in that secret
  (`{"api_key"}`). Both are read at start and again on `POST /admin/restart` only, so a
  rotated credential reaches the app when it restarts (what the key_rotation runbook does).

Run: `uvicorn infra.demo_app:app` with DEMO_DATABASE_URL and DEMO_ADMIN_TOKEN set.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
from typing import Annotated, Any

import boto3
import httpx
import psycopg
from fastapi import FastAPI, Header, HTTPException, Query
from fastapi.responses import JSONResponse, PlainTextResponse
from psycopg.conninfo import make_conninfo
from pydantic import BaseModel

app = FastAPI(title="orders-api (remediation demo target)")

_leaked: list[psycopg.AsyncConnection[Any]] = []
_state: dict[str, Any] = {"read_only": False, "release": None, "release_good": True}
_restarts: dict[str, float] = {}
_started_at = time.time()


_credentials: dict[str, str] = {}


def _secret(arn: str) -> dict[str, Any]:
    # AWSCURRENT is AWS's default; said explicitly because moto's server returns the first
    # version when no stage is named, even after AWSCURRENT moved.
    client = boto3.client("secretsmanager")
    value = client.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"]
    data = json.loads(value)
    assert isinstance(data, dict)
    return data


def _load_credentials() -> None:
    """Read the credentials the app uses until its next restart."""
    fresh: dict[str, str] = {}
    if arn := os.environ.get("DEMO_DB_SECRET_ARN"):
        login = _secret(arn)
        fresh["dsn"] = make_conninfo(
            host=str(login["host"]),
            port=str(login.get("port", 5432)),
            dbname=str(login.get("dbname", "postgres")),
            user=str(login["username"]),
            password=str(login["password"]),
        )
    if arn := os.environ.get("DEMO_API_KEY_SECRET_ARN"):
        fresh["api_key"] = str(_secret(arn)["api_key"])
    _credentials.clear()
    _credentials.update(fresh)


def _dsn() -> str:
    if os.environ.get("DEMO_DB_SECRET_ARN"):
        if "dsn" not in _credentials:
            _load_credentials()
        return _credentials["dsn"]
    return os.environ["DEMO_DATABASE_URL"]


async def _api_key_refused() -> str | None:
    """The vendor's verdict on the app's API key: None when accepted (or none configured)."""
    url = os.environ.get("DEMO_API_VERIFY_URL")
    if not url or not os.environ.get("DEMO_API_KEY_SECRET_ARN"):
        return None
    if "api_key" not in _credentials:
        await asyncio.to_thread(_load_credentials)
    async with httpx.AsyncClient(timeout=3) as client:
        response = await client.get(
            url, headers={"Authorization": f"Bearer {_credentials['api_key']}"}
        )
    return None if response.status_code == 200 else f"API key refused ({response.status_code})"


def _check_admin(authorization: str) -> None:
    expected = f"Bearer {os.environ.get('DEMO_ADMIN_TOKEN', '')}"
    if not os.environ.get("DEMO_ADMIN_TOKEN") or not hmac.compare_digest(authorization, expected):
        raise HTTPException(status_code=401, detail="a valid admin bearer token is required")


@app.get("/health")
async def health() -> JSONResponse:
    if not _state["release_good"]:
        return JSONResponse(
            {"status": "error", "release": _state["release"], "error": "bad release"},
            status_code=500,
        )
    refused = await _api_key_refused()
    if refused is not None:
        return JSONResponse({"status": "unhealthy", "error": refused}, status_code=503)
    if not os.environ.get("DEMO_DATABASE_URL") and not os.environ.get("DEMO_DB_SECRET_ARN"):
        return JSONResponse({"status": "ok", "database": "none configured"})
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
    _check_admin(authorization)
    if idempotency_key and idempotency_key in _restarts:
        return {"already_done": True, "restarted_at": _restarts[idempotency_key]}
    closed = len(_leaked)
    while _leaked:
        await _leaked.pop().close()
    await asyncio.to_thread(_load_credentials)
    now = time.time()
    if idempotency_key:
        _restarts[idempotency_key] = now
    return {"already_done": False, "restarted_at": now, "closed_connections": closed}


class Flag(BaseModel):
    read_only: bool


class Release(BaseModel):
    deployment_id: str
    good: bool = True


@app.get("/admin/maintenance")
async def get_maintenance(authorization: Annotated[str, Header()] = "") -> Flag:
    _check_admin(authorization)
    return Flag(read_only=_state["read_only"])


@app.put("/admin/maintenance")
async def put_maintenance(flag: Flag, authorization: Annotated[str, Header()] = "") -> Flag:
    _check_admin(authorization)
    _state["read_only"] = flag.read_only
    return flag


@app.post("/debug/release")
async def release(body: Release) -> dict[str, Any]:
    _state["release"], _state["release_good"] = body.deployment_id, body.good
    return dict(_state)


async def _write(rollback: bool) -> JSONResponse:
    if _state["read_only"]:
        return JSONResponse({"error": "maintenance: read-only"}, status_code=423)
    try:
        async with (
            await psycopg.AsyncConnection.connect(
                _dsn(), connect_timeout=3, application_name="orders-api"
            ) as conn,
            conn.transaction(force_rollback=rollback),
        ):
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, "
                "created_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("INSERT INTO orders DEFAULT VALUES RETURNING id")
            row = await cur.fetchone()
    except psycopg.errors.ReadOnlySqlTransaction:
        return JSONResponse({"error": "database is read-only"}, status_code=503)
    except psycopg.OperationalError as err:
        return JSONResponse({"error": str(err).strip()[:200]}, status_code=503)
    return JSONResponse({"id": row[0] if row else None, "rolled_back": rollback}, status_code=201)


@app.post("/orders")
async def create_order() -> JSONResponse:
    return await _write(rollback=False)


@app.post("/orders/probe")
async def probe_write() -> JSONResponse:
    return await _write(rollback=True)


@app.get("/orders")
async def list_orders() -> JSONResponse:
    try:
        async with await psycopg.AsyncConnection.connect(
            _dsn(), connect_timeout=3, application_name="orders-api"
        ) as conn:
            cur = await conn.execute("SELECT to_regclass('orders') IS NOT NULL")
            exists = await cur.fetchone()
            count = 0
            if exists and exists[0]:
                cur = await conn.execute("SELECT count(*) FROM orders")
                row = await cur.fetchone()
                count = int(row[0]) if row else 0
    except psycopg.OperationalError as err:
        return JSONResponse({"error": str(err).strip()[:200]}, status_code=503)
    return JSONResponse({"orders": count})


@app.get("/metrics")
async def metrics() -> PlainTextResponse:
    """Prometheus text: the error rate a rollback's verification reads."""
    rate = 0.0 if _state["release_good"] else 1.0
    return PlainTextResponse(
        "# HELP error_rate Share of requests answered with a 5xx.\n"
        "# TYPE error_rate gauge\n"
        f"error_rate {rate}\n"
    )


@app.get("/")
async def index() -> dict[str, Any]:
    return {"app": "orders-api", "up_seconds": round(time.time() - _started_at, 1)}
