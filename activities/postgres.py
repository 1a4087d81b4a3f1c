"""Postgres: connection usage from pg_stat_activity, and termination of stale idle sessions.

The engine connects with the target's DSN (resolved here, never passed in). It should be a
role that can still connect when the pool is exhausted (a superuser uses the reserved slots)
and holds pg_signal_backend; the engine never terminates superusers, replication, or itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.config import load_config
from activities.secrets import resolve_secret

ENGINE_APPLICATION_NAME = "remediation-engine"
TERMINATION_WAIT_SECONDS = 5.0
IDLE_STATES = ("idle", "idle in transaction", "idle in transaction (aborted)")


class TargetInput(BaseModel):
    target: str


class ConnectionUsage(BaseModel):
    target: str
    database: str
    max_connections: int
    total: int
    usage: float
    by_state: dict[str, int]
    by_user: dict[str, int]
    by_application: dict[str, int]


class FindIdleSessionsInput(BaseModel):
    target: str
    idle_older_than_seconds: int


class SessionRef(BaseModel):
    """A backend is identified by pid *and* start time: a pid alone can be reused."""

    pid: int
    backend_start: datetime
    user: str
    application: str
    state: str
    idle_seconds: float


class IdleSessions(BaseModel):
    sessions: list[SessionRef]


class TerminateSessionsInput(BaseModel):
    target: str
    sessions: list[SessionRef]
    idle_older_than_seconds: int
    batch_size: int = 50
    batch_pause_seconds: float = 0.0


class TerminateSessionsResult(BaseModel):
    terminated: list[int] = Field(default_factory=list)
    already_gone: list[int] = Field(default_factory=list)
    skipped_no_longer_idle: list[int] = Field(default_factory=list)


async def connect_target(target: str) -> psycopg.AsyncConnection[dict[str, Any]]:
    config = load_config().target(target)
    if config.kind != "postgres" or config.dsn is None:
        raise ApplicationError(
            f"target {target!r} is a {config.kind} target, not postgres", non_retryable=True
        )
    dsn = resolve_secret(config.dsn)
    try:
        return await psycopg.AsyncConnection.connect(
            dsn,
            autocommit=True,
            connect_timeout=10,
            application_name=ENGINE_APPLICATION_NAME,
            row_factory=dict_row,
        )
    except psycopg.OperationalError as err:
        # The driver's message can echo the DSN; report the target, not the string.
        raise ApplicationError(
            f"cannot connect to target {target!r}: {type(err).__name__} "
            f"({err.sqlstate or 'no sqlstate'})"
        ) from None


def _count(rows: Sequence[dict[str, Any]], key: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        name = row[key] or "(none)"
        counts[name] = counts.get(name, 0) + int(row["n"])
    return counts


@activity.defn
async def get_connection_usage(params: TargetInput) -> ConnectionUsage:
    async with await connect_target(params.target) as conn:
        cur = await conn.execute(
            "SELECT current_database() AS db, current_setting('max_connections')::int AS max"
        )
        head = await cur.fetchone()
        assert head is not None
        cur = await conn.execute(
            """
            SELECT coalesce(state, 'unknown') AS state, usename, application_name, count(*) AS n
            FROM pg_stat_activity
            WHERE backend_type = 'client backend'
            GROUP BY 1, 2, 3
            """
        )
        rows = await cur.fetchall()
    total = sum(int(r["n"]) for r in rows)
    return ConnectionUsage(
        target=params.target,
        database=head["db"],
        max_connections=head["max"],
        total=total,
        usage=round(total / head["max"], 4),
        by_state=_count(rows, "state"),
        by_user=_count(rows, "usename"),
        by_application=_count(rows, "application_name"),
    )


# Sessions of the target's database that are idle (or idle in a transaction) for longer than
# the threshold, excluding our own backend, other engine sessions, superusers and replication.
_ELIGIBLE = """
    FROM pg_stat_activity a
    LEFT JOIN pg_roles r ON r.oid = a.usesysid
    WHERE a.datname = current_database()
      AND a.backend_type = 'client backend'
      AND a.pid <> pg_backend_pid()
      AND a.application_name <> %(engine)s
      AND a.state = ANY(%(states)s)
      AND a.state_change < now() - make_interval(secs => %(older)s)
      AND NOT coalesce(r.rolsuper, false)
      AND NOT coalesce(r.rolreplication, false)
"""


@activity.defn
async def find_idle_sessions(params: FindIdleSessionsInput) -> IdleSessions:
    async with await connect_target(params.target) as conn:
        cur = await conn.execute(
            "SELECT a.pid, a.backend_start, a.usename, a.application_name, a.state,"
            " extract(epoch FROM now() - a.state_change)::float8 AS idle_seconds"
            + _ELIGIBLE
            + " ORDER BY a.state_change",
            {
                "engine": ENGINE_APPLICATION_NAME,
                "states": list(IDLE_STATES),
                "older": params.idle_older_than_seconds,
            },
        )
        rows = await cur.fetchall()
    return IdleSessions(
        sessions=[
            SessionRef(
                pid=r["pid"],
                backend_start=r["backend_start"],
                user=r["usename"] or "",
                application=r["application_name"] or "",
                state=r["state"],
                idle_seconds=round(r["idle_seconds"], 1),
            )
            for r in rows
        ]
    )


async def _present(
    conn: psycopg.AsyncConnection[dict[str, Any]], sessions: list[SessionRef]
) -> set[int]:
    cur = await conn.execute(
        "SELECT a.pid FROM pg_stat_activity a WHERE (a.pid, a.backend_start) IN"
        " (SELECT * FROM unnest(%(pids)s::int[], %(starts)s::timestamptz[]))",
        {"pids": [s.pid for s in sessions], "starts": [s.backend_start for s in sessions]},
    )
    return {r["pid"] for r in await cur.fetchall()}


async def _terminate_batch(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    batch: list[SessionRef],
    idle_older_than_seconds: int,
) -> TerminateSessionsResult:
    """Terminate the planned sessions that are *still* eligible; classify the rest."""
    pids = [s.pid for s in batch]
    starts = [s.backend_start for s in batch]
    cur = await conn.execute(
        "SELECT a.pid, pg_terminate_backend(a.pid) AS ok"
        + _ELIGIBLE
        + " AND (a.pid, a.backend_start) IN"
        "   (SELECT * FROM unnest(%(pids)s::int[], %(starts)s::timestamptz[]))",
        {
            "engine": ENGINE_APPLICATION_NAME,
            "states": list(IDLE_STATES),
            "older": idle_older_than_seconds,
            "pids": pids,
            "starts": starts,
        },
    )
    terminated = {r["pid"] for r in await cur.fetchall() if r["ok"]}
    # pg_terminate_backend only signals; wait until the backends have exited so that
    # "terminated" means gone and the verification that follows sees them gone.
    deadline = time.monotonic() + TERMINATION_WAIT_SECONDS
    while True:
        present = await _present(conn, batch)
        if not present & terminated or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    still_there = present - terminated
    return TerminateSessionsResult(
        terminated=sorted(terminated),
        skipped_no_longer_idle=sorted(still_there),
        already_gone=sorted(set(pids) - terminated - still_there),
    )


@activity.defn
async def terminate_sessions(params: TerminateSessionsInput) -> TerminateSessionsResult:
    """Idempotent: a session already gone is counted as such, never re-targeted.

    Works in batches and heartbeats the cumulative result, so a retry after a worker crash
    resumes where the last attempt stopped.
    """
    info = activity.info()
    done = TerminateSessionsResult()
    if info.heartbeat_details:
        done = TerminateSessionsResult.model_validate(info.heartbeat_details[0])
    handled = set(done.terminated) | set(done.already_gone) | set(done.skipped_no_longer_idle)
    remaining = [s for s in params.sessions if s.pid not in handled]
    async with await connect_target(params.target) as conn:
        for start in range(0, len(remaining), max(1, params.batch_size)):
            batch = remaining[start : start + params.batch_size]
            result = await _terminate_batch(conn, batch, params.idle_older_than_seconds)
            done.terminated += result.terminated
            done.already_gone += result.already_gone
            done.skipped_no_longer_idle += result.skipped_no_longer_idle
            activity.heartbeat(done.model_dump(mode="json"))
            if params.batch_pause_seconds and start + params.batch_size < len(remaining):
                await asyncio.sleep(params.batch_pause_seconds)
    activity.logger.info(
        "terminated %d sessions on %s (%d already gone, %d no longer idle)",
        len(done.terminated),
        params.target,
        len(done.already_gone),
        len(done.skipped_no_longer_idle),
    )
    return done
