"""A Postgres login as a rotatable credential: its secret JSON, its password, its sessions.

The secret holds AWS's JSON shape for database credentials (`{"engine": "postgres", "host",
"port", "dbname", "username", "password"}`), from which the consumers build their DSN.

Passwords go to the server as SCRAM-SHA-256 verifiers computed here, never as plain text, so a
server that logs DDL (`log_statement = 'ddl'`) logs a verifier, not the password. An
`ALTER ROLE` also cannot take a bound parameter, which the verifier's fixed alphabet makes safe
to quote.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from temporalio.exceptions import ApplicationError

from activities.postgres.connection import ENGINE_APPLICATION_NAME, Conn, connect
from activities.postgres.models import SessionInfo

SCRAM_ITERATIONS = 4096
# SQLSTATEs of a refused login: invalid_password, invalid_authorization_specification.
AUTH_REFUSED = ("28P01", "28000")
CONNECT_TIMEOUT = 5


def parse(value: str, arn: str) -> dict[str, Any]:
    """The secret's JSON, checked for what a login needs (the message names fields only)."""
    try:
        data = json.loads(value)
    except ValueError:
        data = None
    missing = (
        [f for f in ("host", "username", "password") if not data.get(f)]
        if isinstance(data, dict)
        else ["a JSON object"]
    )
    if missing:
        raise ApplicationError(
            f"{arn} is not a Postgres credential: it needs {', '.join(missing)} "
            '(AWS\'s shape: {"engine": "postgres", "host", "port", "dbname", "username", '
            '"password"})',
            type="ConfigError",
            non_retryable=True,
        )
    assert isinstance(data, dict)
    return data


def with_login(data: dict[str, Any], username: str, password: str) -> str:
    """The same secret with another login: host, port, dbname and any other fields kept."""
    return json.dumps({**data, "username": username, "password": password})


def conninfo(data: dict[str, Any]) -> str:
    return make_conninfo(
        host=str(data["host"]),
        port=str(data.get("port", 5432)),
        dbname=str(data.get("dbname") or "postgres"),
        user=str(data["username"]),
        password=str(data["password"]),
        connect_timeout=str(CONNECT_TIMEOUT),
        application_name=ENGINE_APPLICATION_NAME,
    )


async def login_works(data: dict[str, Any]) -> bool:
    """Whether the server accepts this login now: True, False when it refuses the password
    (or the role may not log in); an unreachable server raises (retryable)."""
    try:
        async with await psycopg.AsyncConnection.connect(conninfo(data), autocommit=True) as conn:
            await conn.execute("SELECT 1")
    except psycopg.OperationalError as err:
        if err.sqlstate in AUTH_REFUSED or "authentication failed" in str(err):
            return False
        raise ApplicationError(
            f"cannot reach {data['host']}:{data.get('port', 5432)} to test the login of "
            f"{data['username']}: {type(err).__name__} ({err.sqlstate or 'no sqlstate'})"
        ) from None
    return True


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    """What Postgres stores for a SCRAM-SHA-256 password (RFC 5802/7677), computed here."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


async def admin(dsn: str) -> Conn:
    """The admin session that changes logins. It writes even while the database is read-only
    (a leaked credential must be revocable in the middle of a read-only hold)."""
    conn = await connect(dsn, "the database target's admin")
    await conn.execute("SET default_transaction_read_only = off")
    return conn


async def require_roles(conn: Conn, users: list[str]) -> None:
    cursor = await conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", [users])
    found = {row["rolname"] for row in await cursor.fetchall()}
    missing = [u for u in users if u not in found]
    if missing:
        raise ApplicationError(
            f"login role(s) {', '.join(missing)} do not exist: create them with the grants the "
            f"app needs (e.g. CREATE ROLE {missing[0]} LOGIN IN ROLE <the app's group role>)",
            type="ConfigError",
            non_retryable=True,
        )


async def set_password(conn: Conn, user: str, password: str) -> None:
    await conn.execute(
        sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
            sql.Identifier(user), sql.Literal(scram_verifier(password))
        )
    )


async def remove_password(conn: Conn, user: str) -> None:
    """The role keeps its grants and may get a password again; no password login works."""
    await conn.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD NULL").format(sql.Identifier(user)))


async def sessions_of(conn: Conn, user: str) -> list[SessionInfo]:
    cursor = await conn.execute(
        "SELECT pid, host(client_addr) AS addr, application_name, backend_start"
        " FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()"
        " ORDER BY backend_start",
        [user],
    )
    return [
        SessionInfo(
            pid=int(row["pid"]),
            client_addr=row["addr"] or "local",
            application_name=row["application_name"] or "",
            backend_start=row["backend_start"],
        )
        for row in await cursor.fetchall()
    ]


async def terminate(conn: Conn, pids: list[int]) -> int:
    if not pids:
        return 0
    cursor = await conn.execute(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS n FROM unnest(%s::int[]) pid",
        [pids],
    )
    row = await cursor.fetchone()
    return int(row["n"]) if row else 0
