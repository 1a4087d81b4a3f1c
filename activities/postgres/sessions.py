"""Postgres: connection usage from pg_stat_activity, and termination of stale idle sessions.

The engine connects with the target's DSN (resolved here, never passed in). It should be a
role that can still connect when the pool is exhausted (a superuser uses the reserved slots)
and holds pg_signal_backend; the engine never terminates superusers, replication, or itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from temporalio import activity

from activities import heartbeats
from activities.postgres.connection import (
    ENDABLE_PARAMS,
    ENDABLE_SESSIONS,
    Conn,
    connect_target,
)
from activities.postgres.models import (
    ConnectionUsage,
    FindIdleSessionsInput,
    IdleSessions,
    SessionRef,
    TargetInput,
    TerminateSessionsInput,
    TerminateSessionsResult,
    TerminationProgress,
)

TERMINATION_WAIT_SECONDS = 5.0
IDLE_STATES = ("idle", "idle in transaction", "idle in transaction (aborted)")


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
            SELECT coalesce(state, 'unknown') AS state, usename, application_name,
                   datname = current_database() AS here, count(*) AS n
            FROM pg_stat_activity
            WHERE backend_type = 'client backend'
            GROUP BY 1, 2, 3, 4
            """
        )
        rows = await cur.fetchall()
    total = sum(int(r["n"]) for r in rows)
    here = sum(int(r["n"]) for r in rows if r["here"])
    return ConnectionUsage(
        target=params.target,
        database=head["db"],
        max_connections=head["max"],
        total=total,
        database_total=here,
        usage=round(total / head["max"], 4),
        by_state=_count(rows, "state"),
        by_user=_count(rows, "usename"),
        by_application=_count(rows, "application_name"),
    )


# Endable sessions idle (or idle in a transaction) for longer than the threshold.
_ELIGIBLE = (
    ENDABLE_SESSIONS
    + """
      AND a.state = ANY(%(states)s)
      AND a.state_change < now() - make_interval(secs => %(older)s)
"""
)


@activity.defn
async def find_idle_sessions(params: FindIdleSessionsInput) -> IdleSessions:
    async with await connect_target(params.target) as conn:
        cur = await conn.execute(
            "SELECT a.pid, a.backend_start, a.usename, a.application_name, a.state,"
            " extract(epoch FROM now() - a.state_change)::float8 AS idle_seconds"
            + _ELIGIBLE
            + " ORDER BY a.state_change",
            {
                **ENDABLE_PARAMS,
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


async def _present(conn: Conn, sessions: list[SessionRef]) -> set[int]:
    cur = await conn.execute(
        "SELECT a.pid FROM pg_stat_activity a WHERE (a.pid, a.backend_start) IN"
        " (SELECT * FROM unnest(%(pids)s::int[], %(starts)s::timestamptz[]))",
        {"pids": [s.pid for s in sessions], "starts": [s.backend_start for s in sessions]},
    )
    return {r["pid"] for r in await cur.fetchall()}


async def _terminate_batch(
    conn: Conn,
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
            **ENDABLE_PARAMS,
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


def _resume(details: Sequence[Any]) -> TerminationProgress:
    """The progress the last attempt recorded (a worker from before in-flight batches were
    recorded left the result alone)."""
    if not details:
        return TerminationProgress()
    if isinstance(details[0], dict) and "done" not in details[0]:
        return TerminationProgress(done=TerminateSessionsResult.model_validate(details[0]))
    return TerminationProgress.model_validate(details[0])


def _merge(
    done: TerminateSessionsResult, batch: TerminateSessionsResult, *, unreported: bool = False
) -> TerminateSessionsResult:
    """`done` plus one batch's result. For a batch an attempt recorded and then died in
    (`unreported`), the sessions found gone were ended by the engine, not by someone else."""
    ended_earlier = batch.already_gone if unreported else []
    return TerminateSessionsResult(
        terminated=done.terminated + batch.terminated + ended_earlier,
        terminated_unreported=done.terminated_unreported + ended_earlier,
        already_gone=done.already_gone + ([] if unreported else batch.already_gone),
        skipped_no_longer_idle=done.skipped_no_longer_idle + batch.skipped_no_longer_idle,
    )


def _handled(done: TerminateSessionsResult) -> set[int]:
    return set(done.terminated) | set(done.already_gone) | set(done.skipped_no_longer_idle)


def _recorded(
    done: TerminateSessionsResult, in_flight: Sequence[SessionRef] = ()
) -> dict[str, Any]:
    return TerminationProgress(done=done, in_flight=[s.pid for s in in_flight]).model_dump(
        mode="json"
    )


@activity.defn
@heartbeats.records_details
async def terminate_sessions(params: TerminateSessionsInput) -> TerminateSessionsResult:
    """Idempotent: a session already gone is counted as such, never re-targeted.

    Works in batches. Before each batch the attempt records on the server (and waits until
    it has it) the result so far and the batch it is about to terminate, so that a retry
    after a worker died knows what the engine did: sessions of that batch found gone were
    terminated by the engine; sessions no attempt had started on that are gone were already
    gone. Between batches it records the same in slices of the pause, to stay alive.
    """
    progress = _resume(activity.info().heartbeat_details)
    # Alive before connecting (which can take long), recording again what was recorded.
    await heartbeats.record(progress.model_dump(mode="json"))
    done = progress.done
    async with await connect_target(params.target) as conn:
        if progress.in_flight:
            batch = [s for s in params.sessions if s.pid in set(progress.in_flight)]
            result = await _terminate_batch(conn, batch, params.idle_older_than_seconds)
            done = _merge(done, result, unreported=True)
        remaining = [s for s in params.sessions if s.pid not in _handled(done)]
        size = max(1, params.batch_size)
        for start in range(0, len(remaining), size):
            batch = remaining[start : start + size]
            if start and params.batch_pause_seconds:
                await heartbeats.sleep_recording(params.batch_pause_seconds, _recorded(done))
            await heartbeats.record(_recorded(done, batch))
            result = await _terminate_batch(conn, batch, params.idle_older_than_seconds)
            done = _merge(done, result)
    activity.logger.info(
        "terminated %d sessions on %s (%d by an attempt that died before reporting, "
        "%d already gone, %d no longer idle)",
        len(done.terminated),
        params.target,
        len(done.terminated_unreported),
        len(done.already_gone),
        len(done.skipped_no_longer_idle),
    )
    return done
