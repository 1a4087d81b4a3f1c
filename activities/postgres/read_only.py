"""Postgres read-only mode for a target's database ("STOP ACCEPTING WRITES").

`ALTER DATABASE ... SET default_transaction_read_only` reaches new sessions only, so entering
(or leaving) the mode also ends the database's client sessions that began before the change;
the application reconnects and gets the new default. Superusers, replication and the engine
itself are never ended. Both directions are idempotent: the current setting is read first,
and a retry ends only sessions older than the change it made (kept on the heartbeat).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from temporalio import activity

from activities.models import ReadOnlyInput, ReadOnlyResult, WriteCheck
from activities.postgres.connection import ENDABLE_PARAMS, ENDABLE_SESSIONS, Conn, connect_target

SETTING = "default_transaction_read_only"


async def _database_setting(conn: Conn) -> tuple[str, bool]:
    cur = await conn.execute(
        """
        SELECT d.datname AS db,
               coalesce(%(on)s = ANY(s.setconfig), false) AS read_only
        FROM pg_database d
        LEFT JOIN pg_db_role_setting s ON s.setdatabase = d.oid AND s.setrole = 0
        WHERE d.datname = current_database()
        """,
        {"on": f"{SETTING}=on"},
    )
    row = await cur.fetchone()
    assert row is not None
    return str(row["db"]), bool(row["read_only"])


def statements_for(database: str, enabled: bool) -> list[str]:
    """The exact SQL, as the plan shows it."""
    ident = '"' + database.replace('"', '""') + '"'
    change = f"SET {SETTING} = on" if enabled else f"RESET {SETTING}"
    return [
        f"ALTER DATABASE {ident} {change}",
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
        " AND backend_type = 'client backend' AND backend_start < <time of the change>"
        " AND NOT superuser AND application_name <> 'remediation-engine'",
    ]


@activity.defn
async def pg_read_only_state(params: ReadOnlyInput) -> ReadOnlyResult:
    """For the plan: the database's current setting, the SQL that would move it to
    `params.enabled`, and how many client sessions that would end."""
    async with await connect_target(params.target) as conn:
        database, current = await _database_setting(conn)
        cur = await conn.execute("SELECT count(*) AS n" + ENDABLE_SESSIONS, ENDABLE_PARAMS)
        row = await cur.fetchone()
    return ReadOnlyResult(
        scope=database,
        was_read_only=current,
        read_only=current,
        statements=statements_for(database, params.enabled),
        client_sessions=int(row["n"]) if row else 0,
    )


@activity.defn
async def set_database_read_only(params: ReadOnlyInput) -> ReadOnlyResult:
    # Heartbeat details mark a change this activity made (or was making) on an earlier
    # attempt: a retry then still ends the sessions that predate it.
    details = activity.info().heartbeat_details
    retry_of_change = bool(details)
    cutoff = _parse_cutoff(details[0]) if details else None
    async with await connect_target(params.target) as conn:
        # Our own session must be able to write the change even when the database is
        # already read-only (ALTER is refused in a read-only transaction).
        await conn.execute(sql.SQL("SET {} = off").format(sql.Identifier(SETTING)))
        database, was = await _database_setting(conn)
        if was != params.enabled:
            activity.heartbeat({"cutoff": None})
            change = sql.SQL("SET {} = on" if params.enabled else "RESET {}").format(
                sql.Identifier(SETTING)
            )
            await conn.execute(
                sql.SQL("ALTER DATABASE {} ").format(sql.Identifier(database)) + change
            )
            retry_of_change, cutoff = True, None
        ended: list[int] = []
        if retry_of_change:  # nothing changed and no earlier attempt: nothing to end
            if cutoff is None:
                cur = await conn.execute("SELECT now() AS at")
                row = await cur.fetchone()
                assert row is not None
                cutoff = row["at"]
                activity.heartbeat({"cutoff": cutoff.isoformat()})
            ended = await _end_sessions_older_than(conn, cutoff)
    return ReadOnlyResult(
        scope=database,
        was_read_only=was,
        read_only=params.enabled,
        statements=statements_for(database, params.enabled),
        sessions_ended=ended,
    )


def _parse_cutoff(detail: Any) -> datetime | None:
    cutoff = detail.get("cutoff") if isinstance(detail, dict) else None
    return datetime.fromisoformat(cutoff) if cutoff else None


async def _end_sessions_older_than(conn: Conn, cutoff: datetime) -> list[int]:
    cur = await conn.execute(
        "SELECT a.pid, pg_terminate_backend(a.pid) AS ok"
        + ENDABLE_SESSIONS
        + " AND a.backend_start < %(cutoff)s",
        {**ENDABLE_PARAMS, "cutoff": cutoff},
    )
    return sorted(r["pid"] for r in await cur.fetchall() if r["ok"])


@activity.defn
async def check_writes(params: ReadOnlyInput) -> WriteCheck:
    """From a fresh session: can it read, and is a write refused? The write probe is DDL in
    a transaction that is always rolled back, so it leaves nothing behind."""
    async with await connect_target(params.target) as conn:
        try:
            await conn.execute("SELECT count(*) FROM pg_class")
            reads_ok = True
        except psycopg.Error as err:
            return WriteCheck(reads_ok=False, writes_refused=True, detail=type(err).__name__)
        try:
            async with conn.transaction(force_rollback=True):
                await conn.execute("CREATE TABLE _remediation_write_probe (id int)")
        except psycopg.errors.ReadOnlySqlTransaction:
            return WriteCheck(reads_ok=reads_ok, writes_refused=True, detail="read-only")
    return WriteCheck(reads_ok=reads_ok, writes_refused=False, detail="writable")
