"""The databases of one restore, on the target's cluster: scratch creation, markers, counts,
the atomic switch (two renames in one transaction) and the switch back.

Each database the runbook creates or renames carries a marker in its comment
(`COMMENT ON DATABASE`, which follows the database through a rename) naming the run and the
database's role in it, so every step can tell what it already did and never touches a
database that is not its own.
"""

from __future__ import annotations

import json
from typing import Any

from psycopg import sql
from temporalio.exceptions import ApplicationError

from activities.postgres import connection
from activities.postgres.client_tools import Connection
from activities.postgres.connection import Conn, target_dsn

READ_ONLY_SETTING = "default_transaction_read_only=on"


def target_connection(target: str) -> Connection:
    return Connection(target_dsn(target, "; backup_restore restores Postgres"))


async def connect(conn: Connection, database: str | None = None) -> Conn:
    """A connection to `database` on the target's cluster (default: its maintenance
    database, from which databases can be created, renamed and dropped)."""
    name = database or "postgres"
    return await connection.connect(conn.on(name).dsn, f"database {name!r} of the target")


async def databases(admin: Conn, names: list[str]) -> dict[str, dict[str, Any]]:
    """Name -> {marker, owner, read_only, allow, oid} for those of `names` that exist."""
    cur = await admin.execute(
        """
        SELECT d.datname, d.oid::bigint AS oid, pg_get_userbyid(d.datdba) AS owner,
               d.datallowconn AS allow,
               shobj_description(d.oid, 'pg_database') AS comment,
               coalesce(%(ro)s = ANY(s.setconfig), false) AS read_only
        FROM pg_database d
        LEFT JOIN pg_db_role_setting s ON s.setdatabase = d.oid AND s.setrole = 0
        WHERE d.datname = ANY(%(names)s)
        """,
        {"names": names, "ro": READ_ONLY_SETTING},
    )
    out = {}
    for row in await cur.fetchall():
        marker: dict[str, Any] | None = None
        try:
            parsed = json.loads(row["comment"] or "")
            if isinstance(parsed, dict) and "remediate_run" in parsed:
                marker = parsed
        except ValueError:
            pass
        out[row["datname"]] = {**row, "marker": marker}
    return out


async def set_marker(admin: Conn, database: str, marker: dict[str, Any]) -> None:
    await admin.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(database), sql.Literal(json.dumps(marker, sort_keys=True))
        )
    )


def is_ours(info: dict[str, Any] | None, run: str, role: str) -> bool:
    marker = info.get("marker") if info else None
    return marker is not None and marker["remediate_run"] == run and marker.get("role") == role


async def create_scratch(admin: Conn, live: str, scratch: str, run: str) -> None:
    """An empty database like the live one (owner, encoding, locale), marked as this run's."""
    cur = await admin.execute(
        """SELECT pg_get_userbyid(datdba) AS owner, pg_encoding_to_char(encoding) AS enc,
                  datcollate, datctype FROM pg_database WHERE datname = %s""",
        [live],
    )
    row = await cur.fetchone()
    if row is None:
        raise ApplicationError(f"database {live!r} does not exist", non_retryable=True)
    await admin.execute(
        sql.SQL(
            "CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}"
        ).format(
            sql.Identifier(scratch),
            sql.Identifier(row["owner"]),
            sql.Literal(row["enc"]),
            sql.Literal(row["datcollate"]),
            sql.Literal(row["datctype"]),
        )
    )
    await set_marker(admin, scratch, {"remediate_run": run, "role": "scratch", "state": "pre_data"})


async def drop(admin: Conn, database: str) -> None:
    await admin.execute(
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
    )


async def user_tables(db: Conn) -> list[tuple[str, str]]:
    cur = await db.execute(
        """
        SELECT n.nspname AS schema, c.relname AS name
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg_toast%%' AND NOT c.relispartition
        ORDER BY 1, 2
        """
    )
    return [(r["schema"], r["name"]) for r in await cur.fetchall()]


def table_name(schema: str, name: str) -> str:
    """How counts and reports name a table: `schema.table`, as pg_restore --list shows it."""
    return f"{schema}.{name}"


async def row_count(db: Conn, schema: str, name: str) -> int:
    query = sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(schema, name))
    row = await (await db.execute(query)).fetchone()
    return int(row["n"]) if row else 0


async def row_counts(db: Conn) -> dict[str, int]:
    return {
        table_name(schema, name): await row_count(db, schema, name)
        for schema, name in await user_tables(db)
    }


async def non_empty_tables(db: Conn) -> set[str]:
    """Tables with at least one row. A table's data is one COPY, which commits whole or not
    at all, so a table with rows was loaded completely."""
    found = set()
    for schema, name in await user_tables(db):
        query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {}) AS any").format(
            sql.Identifier(schema, name)
        )
        row = await (await db.execute(query)).fetchone()
        if row and row["any"]:
            found.add(table_name(schema, name))
    return found


async def end_sessions(admin: Conn, names: list[str]) -> int:
    cur = await admin.execute(
        """SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity
           WHERE datname = ANY(%s) AND pid <> pg_backend_pid()""",
        [names],
    )
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def swap(admin: Conn, away: str, to_name: str, into: str, from_name: str) -> int:
    """Atomically: `away` is renamed `to_name` and `from_name` takes the name `into`. Nobody
    may be connected to either, so new connections to `away` are refused first and its
    sessions (and any on `from_name`) are ended. If the renames fail, `away` accepts
    connections again before the error goes on: a failed switch leaves the live database
    as it was (its ended sessions reconnect)."""
    await allow_connections(admin, away, False)
    try:
        ended = await end_sessions(admin, [away, from_name])
        async with admin.transaction():
            await admin.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(away), sql.Identifier(to_name)
                )
            )
            await admin.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(from_name), sql.Identifier(into)
                )
            )
    except BaseException:
        if not admin.closed:
            await allow_connections(admin, away, True)
        raise
    await allow_connections(admin, into, True)
    return ended


async def allow_connections(admin: Conn, database: str, allow: bool) -> None:
    await admin.execute(
        sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS " + ("true" if allow else "false")).format(
            sql.Identifier(database)
        )
    )


async def set_read_only(admin: Conn, database: str, on: bool) -> None:
    change = (
        "SET default_transaction_read_only = on" if on else "RESET default_transaction_read_only"
    )
    await admin.execute(sql.SQL("ALTER DATABASE {} " + change).format(sql.Identifier(database)))
