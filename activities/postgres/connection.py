"""How the engine connects to a Postgres target, and which of its sessions it may ever end.

Every connection carries `application_name = remediation-engine`, so the engine's own sessions
(on any worker) are recognisable and never ended by another of its steps. The DSN is resolved
here from the target's reference and never passed in; a driver error can echo the DSN, so a
failed connection is reported by what was being reached and the SQLSTATE, never the message.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from temporalio.exceptions import ApplicationError

from activities.config import load_config
from activities.secrets.references import resolve_secret

ENGINE_APPLICATION_NAME = "remediation-engine"
CONNECT_TIMEOUT_SECONDS = 10

Conn = psycopg.AsyncConnection[dict[str, Any]]

# The sessions the engine may end, as a FROM/WHERE to append conditions to: the client
# backends of the connected database, never this session, another engine session, a superuser
# or a replication connection. Bind `engine` to ENGINE_APPLICATION_NAME (`ENDABLE_PARAMS`).
ENDABLE_SESSIONS = """
    FROM pg_stat_activity a
    LEFT JOIN pg_roles r ON r.oid = a.usesysid
    WHERE a.datname = current_database()
      AND a.backend_type = 'client backend'
      AND a.pid <> pg_backend_pid()
      AND a.application_name <> %(engine)s
      AND NOT coalesce(r.rolsuper, false)
      AND NOT coalesce(r.rolreplication, false)
"""
ENDABLE_PARAMS = {"engine": ENGINE_APPLICATION_NAME}


async def connect(dsn: str, what: str) -> Conn:
    """An autocommit connection with dict rows; `what` names what is reached in an error
    ("target 'orders-db'"), since the driver's own message may contain the DSN."""
    try:
        return await psycopg.AsyncConnection.connect(
            dsn,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            application_name=ENGINE_APPLICATION_NAME,
            row_factory=dict_row,
        )
    except psycopg.OperationalError as err:
        raise ApplicationError(
            f"cannot connect to {what}: {type(err).__name__} ({err.sqlstate or 'no sqlstate'})"
        ) from None


def target_dsn(target: str, runbook_hint: str = "") -> str:
    """The resolved DSN of a Postgres target; any other kind is a config error."""
    config = load_config().target(target)
    if config.kind != "postgres" or config.dsn is None:
        raise ApplicationError(
            f"target {target!r} is a {config.kind} target, not postgres{runbook_hint}",
            type="ConfigError",
            non_retryable=True,
        )
    return resolve_secret(config.dsn)


async def connect_target(target: str) -> Conn:
    return await connect(target_dsn(target), f"target {target!r}")
