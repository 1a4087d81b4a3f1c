"""Backups of a Postgres target in S3: choosing one, checking it, and taking a safety snapshot.

- `find_backups`: the target's backups in S3; the newest taken before a time, or a named one.
- `check_backup`: download it, compare its SHA-256, and read its table of contents with
  `pg_restore --list`, before anyone is asked to approve it.
- `snapshot_database`: `pg_dump -Fc` of the live database streamed to S3 with its checksum
  and row counts (taken in the dump's own snapshot): a backup taken by the engine, and the
  safety snapshot of restores recorded before they shipped it after the switch
  (`snapshots.py` has that one).

Every phase that can take long (a download, a checksum, each table's count, the dump)
heartbeats while it runs, as often as the heartbeat timeout the workflow gave requires.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import tempfile
from datetime import UTC
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import heartbeats
from activities.config import BackupsConfig, load_config
from activities.postgres import databases as dbs
from activities.postgres.client_tools import Connection, parse_toc, pg_bin, run_tool
from activities.postgres.connection import Conn
from activities.postgres.models import (
    BackupCheck,
    BackupChoice,
    CheckBackupInput,
    FindBackupsInput,
    Snapshot,
    SnapshotInput,
)
from activities.storage import s3
from activities.storage.models import BackupInfo, Manifest


def backups_config(target: str) -> BackupsConfig:
    config = load_config().target(target)
    if config.backups is None:
        raise ApplicationError(
            f"target {target!r} has no [targets.{target}.backups] (bucket, prefix)",
            type="ConfigError",
            non_retryable=True,
        )
    return config.backups


def _work_dir() -> Path:
    configured = load_config().runbooks.backup_restore.work_dir
    return Path(configured or Path(tempfile.gettempdir()) / "remediate-restore")


def s3_failure(what: str, err: Exception) -> ApplicationError:
    """A missing bucket does not come back by retrying: say so at once (a safety snapshot
    that cannot be stored then keeps the replaced database instead of waiting minutes)."""
    described = s3.describe_error(err)
    if described.startswith("NoSuchBucket"):
        return ApplicationError(
            f"S3 refused to {what}: {described}; create the bucket or fix the target's "
            "[targets.<name>.backups] bucket",
            type="S3BucketMissing",
            non_retryable=True,
        )
    return ApplicationError(f"S3 refused to {what}: {described}")


@activity.defn
async def find_backups(params: FindBackupsInput) -> BackupChoice:
    config = backups_config(params.target)
    client = s3.s3_client(config.region)
    try:
        backups = await asyncio.to_thread(s3.list_backups, client, config.bucket, config.prefix)
    except (s3.ClientError, s3.BotoCoreError) as err:
        raise s3_failure(f"list s3://{config.bucket}/{config.prefix}", err) from None
    # The engine's own safety snapshots live under the same prefix by default; they are
    # restore candidates only when named.
    snapshots = config.snapshots()
    regular = [b for b in backups if not (snapshots and b.key.startswith(snapshots))]
    newest = regular[0] if regular else None
    if params.name:
        named = [b for b in backups if b.key == params.name or b.key.endswith("/" + params.name)]
        if not named:
            return BackupChoice(
                examined=len(backups),
                newest=newest,
                why_none=f"no backup named {params.name!r} under s3://{config.bucket}/"
                f"{config.prefix}",
            )
        return BackupChoice(chosen=named[0], examined=len(backups), newest=newest)
    candidates = [b for b in regular if params.before is None or b.taken_at < params.before]
    if not candidates:
        where = f"s3://{config.bucket}/{config.prefix}"
        why = (
            f"no backup under {where} was taken before {params.before:%Y-%m-%d %H:%M:%S} UTC"
            if params.before
            else f"no backup under {where}"
        )
        return BackupChoice(examined=len(backups), newest=newest, why_none=why)
    return BackupChoice(chosen=candidates[0], examined=len(backups), newest=newest)


async def download_backup(backup: BackupInfo, target: str) -> tuple[Path, str]:
    """The backup on local disk and its SHA-256 (computed while it downloads)."""
    config = backups_config(target)
    client = s3.s3_client(config.region)
    try:
        return await heartbeats.while_running(
            asyncio.to_thread(s3.download, client, backup, _work_dir()), "downloading"
        )
    except (s3.ClientError, s3.BotoCoreError) as err:
        raise s3_failure(f"download {backup.url}", err) from None


@activity.defn
async def check_backup(params: CheckBackupInput) -> BackupCheck:
    check, _ = await check_archive(params.backup, params.target)
    return check


async def check_archive(backup: BackupInfo, target: str) -> tuple[BackupCheck, Path]:
    """Download `backup`, compare its SHA-256 with the recorded one and read its table of
    contents; returns the check and the local copy (kept: a restore reuses it)."""
    if not backup.sha256:
        raise ApplicationError(
            f"{backup.url} has no recorded checksum (no {backup.key}.json manifest and no "
            "`sha256` object metadata): it cannot be verified, so it is not restored",
            type="BackupUnverifiable",
            non_retryable=True,
        )
    path, digest = await download_backup(backup, target)
    if digest != backup.sha256:
        path.unlink(missing_ok=True)
        raise ApplicationError(
            f"{backup.url} is corrupt: its SHA-256 is {digest[:16]}…, the manifest says "
            f"{backup.sha256[:16]}…",
            type="BackupCorrupt",
            non_retryable=True,
        )
    try:
        listing = await run_tool(
            [str(pg_bin() / "pg_restore"), "--list", str(path)], {}, "pg_restore --list"
        )
    except ApplicationError as err:
        raise ApplicationError(
            f"{backup.url} is not a readable pg_dump archive: {err.message}",
            type="BackupUnreadable",
            non_retryable=True,
        ) from None
    toc = parse_toc(listing)
    tables = sorted(dbs.table_name(e.schema, e.name) for e in toc if e.kind == "TABLE DATA")
    check = BackupCheck(
        sha256=digest, size=path.stat().st_size, toc_entries=len(toc), tables=tables
    )
    return check, path


@activity.defn
async def snapshot_database(params: SnapshotInput) -> Snapshot:
    """Idempotent per label: a snapshot already uploaded under it is returned as it is."""
    activity.heartbeat("starting")
    config = backups_config(params.target)
    client = s3.s3_client(config.region)
    conn = dbs.target_connection(params.target)
    prefix = config.snapshots() if params.purpose == "snapshot" else config.prefix
    key = f"{prefix}{conn.database}-{params.label}.dump"
    existing = await heartbeats.while_running(
        asyncio.to_thread(s3.list_backups, client, config.bucket, key), "listing"
    )
    for backup in existing:
        if backup.key == key and backup.sha256 and backup.row_counts is not None:
            return Snapshot(
                bucket=config.bucket,
                key=key,
                sha256=backup.sha256,
                size=backup.size,
                taken_at=backup.taken_at,
                database=conn.database,
                row_counts=backup.row_counts,
                database_oid=await _oid(conn),
            )
    manifest, oid = await dump_to_s3(conn, conn.database, client, config.bucket, key)
    return Snapshot(
        bucket=config.bucket,
        key=key,
        sha256=manifest.sha256,
        size=manifest.size or 0,
        taken_at=manifest.taken_at,
        database=conn.database,
        row_counts=manifest.row_counts or {},
        database_oid=oid,
    )


async def dump_to_s3(
    conn: Connection, database: str, client: Any, bucket: str, key: str
) -> tuple[Manifest, int]:
    """`pg_dump -Fc` of `database` streamed to S3 under `key`, then its manifest (checksum,
    time, row counts counted in the dump's own snapshot); returns the manifest and the
    dumped database's oid. The manifest names the target's live database even when the
    dump is of another one (the replaced database, renamed aside): it is what a person
    restores the live database from."""
    db = await heartbeats.while_running(dbs.connect(conn, database), "connecting")
    try:
        # Counts and dump from one snapshot: the manifest's counts are the dump's counts.
        await db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        row = await (await db.execute(SNAPSHOT_QUERY)).fetchone()
        assert row is not None
        snapshot_id, taken_at, oid = row["s"], row["t"], row["oid"]
        counts = await count_rows(db)
        argv = [
            str(pg_bin() / "pg_dump"), "-Fc", "--snapshot", snapshot_id, *conn.on(database).args()
        ]  # fmt: skip
        digest, size = await heartbeats.while_running(
            _dump_to_s3(argv, conn.env(), client, bucket, key), "uploading"
        )
        await db.execute("COMMIT")
    except (s3.ClientError, s3.BotoCoreError) as err:
        raise s3_failure(f"upload s3://{bucket}/{key}", err) from None
    finally:
        await db.close()
    manifest = Manifest(
        sha256=digest,
        taken_at=taken_at.astimezone(UTC),
        size=size,
        database=conn.database,
        row_counts=counts,
    )
    await heartbeats.while_running(
        asyncio.to_thread(s3.put_manifest, client, bucket, key, manifest), "manifest"
    )
    return manifest, int(oid)


SNAPSHOT_QUERY = """
    SELECT pg_export_snapshot() AS s, now() AS t,
           (SELECT oid::bigint FROM pg_database WHERE datname = current_database()) AS oid
"""


async def _oid(conn: Connection) -> int | None:
    """The live database's oid now (a retry that found its snapshot already uploaded)."""
    admin = await dbs.connect(conn)
    try:
        found = await dbs.databases(admin, [conn.database])
    finally:
        await admin.close()
    info = found.get(conn.database)
    return int(info["oid"]) if info else None


async def count_rows(db: Conn) -> dict[str, int]:
    """Every table's rows, heartbeating before and while each is counted: on a large database
    (or a table a migration holds locked) counting can take longer than the heartbeat
    timeout, and a timed-out attempt would count again from the start, for ever."""
    counts = {}
    for schema, name in await dbs.user_tables(db):
        table = dbs.table_name(schema, name)
        activity.heartbeat(f"counting {table}")
        counts[table] = await heartbeats.while_running(
            dbs.row_count(db, schema, name), f"counting {table}"
        )
    return counts


async def _dump_to_s3(
    argv: list[str], env: dict[str, str], client: Any, bucket: str, key: str
) -> tuple[str, int]:
    """pg_dump's output streamed straight to S3 (nothing on local disk), hashed on the way.
    Cancelled (the run no longer needs it, or is cancelled itself), pg_dump is killed and
    the upload thread is waited for: it then finds the dump failed and removes what it sent,
    so a cancelled snapshot never leaves a truncated object behind."""
    # Popen only starts it (no wait); its pipe is read by the upload thread.
    process = subprocess.Popen(  # noqa: S603, ASYNC220 - fixed binary, no secrets in argv
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    upload = asyncio.ensure_future(asyncio.to_thread(_upload_dump, process, client, bucket, key))
    try:
        return await asyncio.shield(upload)
    except asyncio.CancelledError:
        process.kill()
        with contextlib.suppress(Exception):
            await upload
        raise


def _upload_dump(
    process: subprocess.Popen[bytes], client: Any, bucket: str, key: str
) -> tuple[str, int]:
    assert process.stdout is not None and process.stderr is not None
    try:
        digest, size = s3.upload_stream(client, process.stdout, bucket, key)
    finally:
        process.stdout.close()
        stderr = process.stderr.read().decode(errors="replace")
        code = process.wait()
    if code != 0:
        tail = " | ".join(stderr.strip().splitlines()[-3:])
        client.delete_object(Bucket=bucket, Key=key)
        raise ApplicationError(f"pg_dump failed (exit {code}): {tail}")
    return digest, size
