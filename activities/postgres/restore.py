"""Restoring a backup into a Postgres target, beside the live database, then switching.

- `restore_to_scratch`: the backup into a new database beside the live one. Resumable: the
  schema first, then each table's data (a table with rows is complete: one COPY each), then
  indexes and constraints; a retry after a worker died continues where it stopped.
- `validate_database`: row counts (against the backup's manifest when it has one), not empty,
  and the configured sanity queries.
- `switch_in_restored` / `switch_back`: two renames in one transaction, idempotent.
- `drop_replaced`: drop the replaced database once the run is verified (ours only), and,
  for a restore that shipped its safety snapshot after the switch, only while that
  snapshot is in S3 as verified.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from psycopg import sql
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.config import load_config
from activities.postgres import databases as dbs
from activities.postgres.backups import download_backup
from activities.postgres.client_tools import parse_toc, pg_bin, run_tool
from activities.postgres.connection import Conn
from activities.postgres.models import (
    DropInput,
    RestoreInput,
    RestoreResult,
    SwitchInput,
    SwitchResult,
    ValidateInput,
    Validation,
)
from activities.postgres.snapshots import snapshot_problem


@activity.defn
async def restore_to_scratch(params: RestoreInput) -> RestoreResult:
    started = time.monotonic()
    names, run = params.names, params.run
    conn = dbs.target_connection(params.target)
    jobs = max(1, load_config().runbooks.backup_restore.restore_jobs)
    admin = await dbs.connect(conn)
    try:
        present = await dbs.databases(admin, [names.live, names.scratch])
        if dbs.is_ours(present.get(names.live), run, "scratch"):
            return RestoreResult(scratch=names.scratch, tables_restored=0, already_restored=True)
        scratch = present.get(names.scratch)
        if scratch is not None and not dbs.is_ours(scratch, run, "scratch"):
            raise ApplicationError(
                f"database {names.scratch!r} exists and is not this run's scratch database; "
                "drop or rename it",
                non_retryable=True,
            )
        state = scratch["marker"].get("state") if scratch else None
        if state == "restored":
            return RestoreResult(scratch=names.scratch, tables_restored=0, already_restored=True)
        path, digest = await download_backup(params.backup, params.target)
        if params.backup.sha256 and digest != params.backup.sha256:
            raise ApplicationError(
                f"{params.backup.url} downloaded with SHA-256 {digest[:16]}…, not the "
                f"checked {params.backup.sha256[:16]}…: it changed since it was checked",
                type="BackupCorrupt",
                non_retryable=True,
            )
        bin_ = pg_bin()
        toc = parse_toc(await run_tool([str(bin_ / "pg_restore"), "--list", str(path)], {}, "list"))
        target_args = conn.on(names.scratch).args()
        restore = [str(bin_ / "pg_restore"), "--exit-on-error", *target_args]
        if state in (None, "pre_data"):
            # The schema is quick: an interrupted one is started again from an empty database.
            await dbs.drop(admin, names.scratch)
            await dbs.create_scratch(admin, names.live, names.scratch, run)
            await run_tool([*restore, "--section=pre-data", str(path)], conn.env(), "schema")
            state = "data"
            await _mark(admin, names.scratch, run, state)
        resumed: list[str] = []
        tables = [e for e in toc if e.kind == "TABLE DATA"]
        if state == "data":
            resumed = await _restore_data(conn, names.scratch, path, restore, toc, jobs)
            state = "post_data"
            await _mark(admin, names.scratch, run, state)
        if state == "post_data":
            # A post-data step that was interrupted left some indexes: --clean makes it repeatable.
            again = ["--clean", "--if-exists"] if resumed or scratch is not None else []
            await run_tool(
                [*restore, "--section=post-data", f"--jobs={jobs}", *again, str(path)],
                conn.env(),
                "indexes and constraints",
            )
            await _mark(admin, names.scratch, run, "restored")
    finally:
        await admin.close()
    return RestoreResult(
        scratch=names.scratch,
        tables_restored=len(tables) - len(resumed),
        resumed_tables=resumed,
        seconds=round(time.monotonic() - started, 2),
    )


async def _mark(admin: Conn, database: str, run: str, state: str) -> None:
    await dbs.set_marker(admin, database, {"remediate_run": run, "role": "scratch", "state": state})


async def _restore_data(
    conn: Any, scratch: str, path: Path, restore: list[str], toc: list[Any], jobs: int
) -> list[str]:
    """Each table's data in its own pg_restore, `jobs` at a time; tables already loaded by an
    earlier attempt are kept. Returns those kept."""
    details = activity.info().heartbeat_details
    done: set[str] = set(details[0]) if details and isinstance(details[0], list) else set()
    db = await dbs.connect(conn, scratch)
    try:
        done |= await dbs.non_empty_tables(db)
        resumed = sorted(done)
        pending = [e for e in toc if e.kind == "TABLE DATA" and _qualified(e) not in done]
        for entry in pending:  # a half-loaded table cannot exist, but be certain
            await db.execute(
                sql.SQL("TRUNCATE {}").format(sql.Identifier(entry.schema, entry.name))
            )
    finally:
        await db.close()
    lists = Path(tempfile.mkdtemp(prefix="remediate-toc-"))
    limit = asyncio.Semaphore(jobs)

    async def load(entry: Any) -> None:
        async with limit:
            listing = lists / f"{entry.dump_id}.list"
            listing.write_text(entry.line + "\n")
            argv = [*restore, "--data-only", "-L", str(listing), str(path)]
            await run_tool(argv, conn.env(), f"data of {_qualified(entry)}", sorted(done))
            done.add(_qualified(entry))
            activity.heartbeat(sorted(done))

    await asyncio.gather(*(load(e) for e in pending))
    # Sequence positions and large objects: cheap, and safe to apply again.
    rest = [e for e in toc if e.kind in ("SEQUENCE SET", "BLOB", "BLOBS", "LARGE OBJECT")]
    if rest:
        listing = lists / "rest.list"
        listing.write_text("".join(e.line + "\n" for e in rest))
        argv = [*restore, "--data-only", "-L", str(listing), str(path)]
        await run_tool(argv, conn.env(), "sequences", sorted(done))
    return [t for t in resumed if t in {_qualified(e) for e in toc if e.kind == "TABLE DATA"}]


def _qualified(entry: Any) -> str:
    return dbs.table_name(entry.schema, entry.name)


@activity.defn
async def validate_database(params: ValidateInput) -> Validation:
    conn = dbs.target_connection(params.target)
    queries = load_config().runbooks.backup_restore.sanity_queries
    db = await dbs.connect(conn, params.database)
    problems: list[str] = []
    sanity: dict[str, float] = {}
    try:
        counts = await dbs.row_counts(db)
        for query in queries:
            try:
                row = await (await db.execute(query.sql)).fetchone()
            except Exception as err:
                problems.append(f"{query.name}: {type(err).__name__}: {str(err)[:200]}")
                continue
            value = float(next(iter(row.values()))) if row else float("nan")
            sanity[query.name] = value
            if query.min is not None and not value >= query.min:
                problems.append(f"{query.name} = {value:g}, expected at least {query.min:g}")
            if query.max is not None and not value <= query.max:
                problems.append(f"{query.name} = {value:g}, expected at most {query.max:g}")
    finally:
        await db.close()
    total = sum(counts.values())
    if total == 0:
        problems.append(f"{params.database} is empty: no table has a row")
    if params.expected_counts is not None:
        for table, expected in sorted(params.expected_counts.items()):
            found = counts.get(table)
            if found != expected:
                problems.append(f"{table}: {found} rows, expected {expected}")
        extra = sorted(set(counts) - set(params.expected_counts))
        if extra:
            problems.append(f"tables not in the backup's manifest: {', '.join(extra)}")
    return Validation(
        passed=not problems, row_counts=counts, total_rows=total, problems=problems, sanity=sanity
    )


@activity.defn
async def switch_in_restored(params: SwitchInput) -> SwitchResult:
    names, run = params.names, params.run
    admin = await dbs.connect(dbs.target_connection(params.target))
    try:
        present = await dbs.databases(admin, [names.live, names.scratch, names.previous])
        if dbs.is_ours(present.get(names.live), run, "scratch"):
            return SwitchResult(already=True, detail=f"{names.live} already is the restored one")
        if not dbs.is_ours(present.get(names.scratch), run, "scratch"):
            raise ApplicationError(
                f"no restored database {names.scratch!r} of this run to switch in",
                non_retryable=True,
            )
        if names.previous in present:
            raise ApplicationError(
                f"database {names.previous!r} already exists; the replaced database needs "
                "that name",
                non_retryable=True,
            )
        live = present.get(names.live)
        _as_planned(params, live)
        # The restored database inherits read-only mode, so writes stay off until the exit.
        if live is not None and live["read_only"]:
            await dbs.set_read_only(admin, names.scratch, True)
        original = live["comment"] if live else None
        ended = await dbs.swap(admin, names.live, names.previous, names.live, names.scratch)
        await dbs.set_marker(
            admin,
            names.previous,
            {"remediate_run": run, "role": "previous", "original_comment": original},
        )
        await dbs.set_marker(
            admin, names.live, {"remediate_run": run, "role": "scratch", "state": "switched"}
        )
    finally:
        await admin.close()
    return SwitchResult(
        already=False,
        detail=f"{names.live} is the restored database; the replaced one is {names.previous}",
        sessions_ended=ended,
    )


def _as_planned(params: SwitchInput, live: dict[str, Any] | None) -> None:
    """The switch's precondition: the live database is the one the plan's safety snapshot
    was taken of, and no write reached it since (still read-only). Otherwise the snapshot
    does not hold what the switch would discard: refuse, and let the run plan again."""
    name = params.names.live
    if params.live_oid is not None and (live is None or live["oid"] != params.live_oid):
        now = f"oid {live['oid']}" if live else "gone"
        raise ApplicationError(
            f"{name} is not the database the plan was made for (snapshotted as oid "
            f"{params.live_oid}, now {now})",
            type="PlanDrift",
            non_retryable=True,
        )
    if params.live_read_only and live is not None and not live["read_only"]:
        raise ApplicationError(
            f"{name} accepts writes again since its safety snapshot: writes made since would "
            "be lost without a copy",
            type="PlanDrift",
            non_retryable=True,
        )


@activity.defn
async def switch_back(params: SwitchInput) -> SwitchResult:
    names, run = params.names, params.run
    admin = await dbs.connect(dbs.target_connection(params.target))
    try:
        present = await dbs.databases(admin, [names.live, names.previous, names.failed])
        if not dbs.is_ours(present.get(names.live), run, "scratch"):
            return SwitchResult(already=True, detail=f"{names.live} is not the restored database")
        previous = present.get(names.previous)
        if not dbs.is_ours(previous, run, "previous"):
            raise ApplicationError(
                f"the replaced database {names.previous!r} is gone; cannot switch back",
                non_retryable=True,
            )
        assert previous is not None
        ended = await dbs.swap(admin, names.live, names.failed, names.live, names.previous)
        original = previous["marker"].get("original_comment")
        await admin.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(names.live), sql.Literal(original)
            )
        )
        await dbs.set_marker(
            admin, names.failed, {"remediate_run": run, "role": "failed", "state": "switched_out"}
        )
    finally:
        await admin.close()
    return SwitchResult(
        already=False,
        detail=f"{names.live} is the database from before the restore again; the restored "
        f"one is kept as {names.failed}",
        sessions_ended=ended,
    )


@activity.defn
async def drop_replaced(params: DropInput) -> bool:
    admin = await dbs.connect(dbs.target_connection(params.target))
    try:
        present = await dbs.databases(admin, [params.database])
        if params.database not in present:
            return False
        if not dbs.is_ours(present[params.database], params.run, params.role):
            raise ApplicationError(
                f"{params.database!r} is not this run's {params.role} database; not dropping it",
                non_retryable=True,
            )
        if params.snapshot is not None:
            problem = await snapshot_problem(params.target, params.snapshot)
            if problem is not None:
                raise ApplicationError(
                    f"not dropping {params.database!r}: it holds the replaced data and its "
                    f"safety snapshot is not safe in S3 ({problem}); keep it until the data "
                    "is saved elsewhere",
                    type="SnapshotMissing",
                    non_retryable=True,
                )
        await dbs.drop(admin, params.database)
        return True
    finally:
        await admin.close()
