"""pg_dump and pg_restore as subprocesses, with the target's credentials kept off the
command line (the password goes in the child's environment, never in `ps` or an error).

Every long call heartbeats while it runs, so a worker that dies mid-restore is noticed within
the heartbeat timeout and the next attempt resumes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import heartbeats
from activities.config import load_config

DEFAULT_PG_BIN = "/usr/lib/postgresql/15/bin"


def pg_bin() -> Path:
    configured = load_config().runbooks.backup_restore.pg_bin
    path = Path(configured or os.environ.get("PG_BIN", DEFAULT_PG_BIN))
    if not (path / "pg_restore").exists():
        raise ApplicationError(
            f"pg_restore not found in {path}; set [runbooks.backup_restore] pg_bin or PG_BIN",
            type="ConfigError",
            non_retryable=True,
        )
    return path


@dataclass(frozen=True)
class Connection:
    """A DSN split for the client tools: arguments without the password, and an environment
    that carries it."""

    dsn: str

    @property
    def database(self) -> str:
        return str(conninfo_to_dict(self.dsn).get("dbname") or "postgres")

    def on(self, database: str) -> Connection:
        return Connection(make_conninfo(self.dsn, dbname=database))

    def args(self) -> list[str]:
        params = conninfo_to_dict(self.dsn)
        out = []
        for key, flag in (("host", "--host"), ("port", "--port"), ("user", "--username")):
            if params.get(key):
                out += [flag, str(params[key])]
        return [*out, "--dbname", self.database]

    def env(self) -> dict[str, str]:
        params = conninfo_to_dict(self.dsn)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        if params.get("password"):
            env["PGPASSWORD"] = str(params["password"])
        if params.get("sslmode"):
            env["PGSSLMODE"] = str(params["sslmode"])
        env["PGCONNECT_TIMEOUT"] = "10"
        return env


class ToolFailedError(ApplicationError):
    pass


async def run_tool(
    argv: Sequence[str], env: dict[str, str], what: str, details: object = None
) -> str:
    """Run a client tool to completion, heartbeating; return its stdout. A failure raises
    with the tool's last lines of stderr (which name objects, not credentials)."""
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    communicate = asyncio.ensure_future(process.communicate())
    try:
        while True:
            done, _ = await asyncio.wait({communicate}, timeout=heartbeats.interval())
            if done:
                break
            if activity.in_activity():
                activity.heartbeat(details)
    except asyncio.CancelledError:
        process.kill()
        raise
    out, err = communicate.result()
    if process.returncode != 0:
        tail = " | ".join(err.decode(errors="replace").strip().splitlines()[-3:])
        raise ToolFailedError(f"{what} failed (exit {process.returncode}): {tail}")
    return out.decode(errors="replace")


@dataclass(frozen=True)
class TocEntry:
    """One line of `pg_restore --list`."""

    dump_id: int
    line: str
    kind: str  # "TABLE DATA", "TABLE", "INDEX", ...
    schema: str
    name: str


_KINDS = sorted(
    (
        "TABLE DATA",
        "SEQUENCE SET",
        "SEQUENCE OWNED BY",
        "FK CONSTRAINT",
        "DEFAULT ACL",
        "MATERIALIZED VIEW DATA",
        "BLOB",
        "BLOBS",
        "LARGE OBJECT",
    ),
    key=len,
    reverse=True,
)


def parse_toc(listing: str) -> list[TocEntry]:
    """Entries of a `pg_restore --list` listing (comments skipped). Lines look like
    `215; 1259 16390 TABLE public orders app`: id; catalog oid; kind; schema; name; owner."""
    entries = []
    for line in listing.splitlines():
        if not line.strip() or line.startswith(";"):
            continue
        head, _, rest = line.partition(";")
        if not head.strip().isdigit():
            continue
        fields = rest.split()
        if len(fields) < 3:
            continue
        body = " ".join(fields[2:])  # after the two catalog numbers
        kind = next((k for k in _KINDS if body.startswith(k + " ")), body.split(" ", 1)[0])
        tail = body[len(kind) :].split()
        schema, name = (tail[0], tail[1]) if len(tail) >= 2 else ("-", tail[0] if tail else "")
        entries.append(TocEntry(int(head), line, kind, schema, name))
    return entries
