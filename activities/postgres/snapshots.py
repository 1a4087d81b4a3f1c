"""The safety snapshot of the data a restore replaces, shipped to S3 after the switch.

A restore keeps a restorable copy of the data it replaces until the run ends. It no longer
waits for that copy to reach S3 before it restores: once writes are off the live database
cannot change, the switch renames it aside (a catalog change: every byte stays), and the
renamed database is itself the copy until the S3 snapshot of it is verified. So:

- `plan_snapshot`: with writes off, what the snapshot will hold (the live database's oid
  and row counts, read in one transaction) and where it will go. The plan shows this, and
  the switch refuses if the live database is no longer that one or took writes since.
- `snapshot_replaced`: after the switch, `pg_dump -Fc` of this run's replaced database
  (the planned oid, under its aside name) streamed to the planned key, with its manifest.
  Idempotent: a snapshot already stored under the key is returned as it is.
- `verify_snapshot`: the object read back from S3: its SHA-256 is the one computed while
  streaming, and `pg_restore --list` reads it. Only then may the replaced database go
  (`restore.drop_replaced` checks the object again, and refuses without it).

If any of this fails the replaced database is simply kept: nothing is dropped without a
verified snapshot.
"""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import heartbeats
from activities.postgres import databases as dbs
from activities.postgres.backups import (
    SNAPSHOT_QUERY,
    backups_config,
    check_archive,
    count_rows,
    dump_to_s3,
    s3_failure,
)
from activities.postgres.models import (
    BackupCheck,
    PlannedSnapshot,
    PlanSnapshotInput,
    Snapshot,
    SnapshotReplacedInput,
    VerifySnapshotInput,
)
from activities.storage import s3
from activities.storage.models import BackupInfo


@activity.defn
async def plan_snapshot(params: PlanSnapshotInput) -> PlannedSnapshot:
    """Read-only: the live database as the plan will describe it, once writes are off."""
    activity.heartbeat("starting")
    config = backups_config(params.target)
    conn = dbs.target_connection(params.target)
    db = await heartbeats.while_running(dbs.connect(conn, conn.database), "connecting")
    try:
        await db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        row = await (await db.execute(SNAPSHOT_QUERY)).fetchone()
        assert row is not None
        counts = await count_rows(db)
        await db.execute("COMMIT")
    finally:
        await db.close()
    return PlannedSnapshot(
        bucket=config.bucket,
        key=f"{config.snapshots()}{conn.database}-{params.label}.dump",
        taken_at=row["t"],
        database=conn.database,
        row_counts=counts,
        database_oid=int(row["oid"]),
    )


@activity.defn
async def snapshot_replaced(params: SnapshotReplacedInput) -> Snapshot:
    activity.heartbeat("starting")
    planned, names = params.planned, params.names
    config = backups_config(params.target)
    client = s3.s3_client(config.region)
    conn = dbs.target_connection(params.target)
    admin = await dbs.connect(conn)
    try:
        present = await dbs.databases(admin, [names.previous])
        replaced = present.get(names.previous)
        if not dbs.is_ours(replaced, params.run, "previous"):
            raise ApplicationError(
                f"{names.previous!r} is not this run's replaced database (gone, or never "
                "switched out): there is nothing of this run to snapshot",
                type="ReplacedGone",
                non_retryable=True,
            )
        assert replaced is not None
        if planned.database_oid is not None and replaced["oid"] != planned.database_oid:
            raise ApplicationError(
                f"{names.previous!r} is oid {replaced['oid']}, not the database the plan was "
                f"made for (oid {planned.database_oid}); not snapshotting it",
                type="ReplacedGone",
                non_retryable=True,
            )
        # The switch left it refusing connections (so nobody uses it by mistake); the dump
        # needs one, and so does a person saving it by hand if the snapshot fails. It keeps
        # default_transaction_read_only: nobody writes to it by accident.
        await dbs.allow_connections(admin, names.previous, True)
    finally:
        await admin.close()
    stored = await _stored(client, planned)
    if stored is not None:
        return stored
    manifest, oid = await dump_to_s3(conn, names.previous, client, planned.bucket, planned.key)
    return Snapshot(
        bucket=planned.bucket,
        key=planned.key,
        sha256=manifest.sha256,
        size=manifest.size or 0,
        taken_at=manifest.taken_at,
        database=planned.database,
        row_counts=manifest.row_counts or {},
        database_oid=oid,
    )


async def _stored(client: object, planned: PlannedSnapshot) -> Snapshot | None:
    """The snapshot under the planned key, if an earlier attempt finished it (object and
    manifest: the manifest is written last)."""
    try:
        found = await heartbeats.while_running(
            asyncio.to_thread(s3.list_backups, client, planned.bucket, planned.key), "listing"
        )
    except (s3.ClientError, s3.BotoCoreError) as err:
        raise s3_failure(f"list {planned.url}", err) from None
    for backup in found:
        if backup.key == planned.key and backup.sha256 and backup.row_counts is not None:
            return Snapshot(
                bucket=planned.bucket,
                key=planned.key,
                sha256=backup.sha256,
                size=backup.size,
                taken_at=backup.taken_at,
                database=planned.database,
                row_counts=backup.row_counts,
                database_oid=planned.database_oid,
            )
    return None


@activity.defn
async def verify_snapshot(params: VerifySnapshotInput) -> BackupCheck:
    """Read the snapshot back from S3: the checksum computed while streaming, a readable
    archive, every table the manifest counted. The local copy is removed afterwards."""
    snapshot = params.snapshot
    backup = BackupInfo(
        bucket=snapshot.bucket,
        key=snapshot.key,
        size=snapshot.size,
        taken_at=snapshot.taken_at,
        sha256=snapshot.sha256,
        row_counts=snapshot.row_counts,
    )
    check, path = await check_archive(backup, params.target)
    path.unlink(missing_ok=True)
    missing = sorted(set(snapshot.row_counts) - set(check.tables))
    if missing:
        raise ApplicationError(
            f"{snapshot.url} holds no data for {', '.join(missing)}, which the replaced "
            "database had: the replaced database is kept",
            type="BackupCorrupt",
            non_retryable=True,
        )
    return check


async def snapshot_problem(target: str, snapshot: Snapshot) -> str | None:
    """Why `snapshot` is not (or no longer) in S3 as verified; None when it is. The drop of
    the replaced database asks this last, just before dropping."""
    config = backups_config(target)
    client = s3.s3_client(config.region)
    try:
        found = await asyncio.to_thread(s3.list_backups, client, snapshot.bucket, snapshot.key)
    except (s3.ClientError, s3.BotoCoreError) as err:
        raise s3_failure(f"list {snapshot.url}", err) from None
    stored = next((b for b in found if b.key == snapshot.key), None)
    if stored is None:
        return f"{snapshot.url} is not in S3"
    if stored.sha256 != snapshot.sha256 or stored.size != snapshot.size:
        return (
            f"{snapshot.url} is not the verified snapshot (SHA-256 {str(stored.sha256)[:16]}…, "
            f"{stored.size} bytes; verified: {snapshot.sha256[:16]}…, {snapshot.size} bytes)"
        )
    return None
