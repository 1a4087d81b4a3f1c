"""backup_restore's overlapped steps keep the same safety (issue 17): moto's S3, a real
Postgres, a real Temporal dev server, as in tests/test_backup_restore.py.

The backup is checked while read-only is entered, and the safety snapshot is shipped from
the replaced database after the switch. What must still hold: the replaced data is
restorable at every moment until the run ends; a snapshot that cannot be stored loses
nothing and never lets the replaced database be dropped; a worker killed while the snapshot
ships is replaced and the run finishes with one good snapshot; a backup that fails its
check while writes are being stopped leaves writes on.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.postgres import databases as dbs
from activities.postgres.client_tools import Connection
from activities.postgres.models import DropInput, Snapshot
from activities.postgres.restore import drop_replaced
from activities.safety import SafetyStatus, safety_workflow_id
from infra.local_postgres import PostgresServer
from tests.support import eventually, mint, switch
from tests.test_backup_restore import (
    Handle,
    Shop,
    configure,
    corrupt,
    create_shop,
    fingerprint,
    restore_copy,
    start,
    take_backup,
)
from workers.worker import build_worker
from workflows.models import GateView, RunStatus
from workflows.runbook import RunbookWorkflow


@pytest.fixture
def bucket(aws_env: str) -> str:
    """A bucket of the test's own: some tests break it on purpose."""
    name = f"overlap-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


async def approve(env: WorkflowEnvironment, workflow_id: str, approver: str) -> None:
    """Approve the gate of `workflow_id` once it opens."""
    handle = env.client.get_workflow_handle(workflow_id)

    async def probe() -> GateView | None:
        try:
            return await handle.query(RunbookWorkflow.pending_gate)
        except Exception:
            return None

    gate = await eventually(probe, 120)
    await handle.execute_update(RunbookWorkflow.approve, mint(approver, gate, "approve"))


async def corrupted_shop(
    postgres: PostgresServer, name: str, bucket: str, tmp_path: Path, events: int
) -> tuple[Shop, datetime, dict[str, Any], dict[str, Any]]:
    """A shop with a nightly backup, then corrupted: (shop, corruption time, good, bad)."""
    shop = create_shop(postgres, name, events=events)
    configure(tmp_path, shop, bucket)
    await take_backup(f"nightly-{name}")
    with shop.connect() as conn:
        good = fingerprint(conn)
    await asyncio.sleep(1.1)
    corrupted_at = datetime.now(UTC)
    corrupt(shop)
    with shop.connect() as conn:
        bad = fingerprint(conn)
    return shop, corrupted_at, good, bad


def databases_like(shop: Shop, pattern: str) -> list[str]:
    with shop.connect("postgres") as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", [pattern]
        ).fetchall()
    return [r[0] for r in rows]


def empty_and_delete(bucket: str) -> None:
    client = boto3.client("s3")
    for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)


async def test_a_snapshot_that_cannot_be_stored_keeps_the_replaced_database(
    dev_env: WorkflowEnvironment, postgres: PostgresServer, bucket: str, tmp_path: Path
) -> None:
    """The bucket disappears after the plan: the restore goes ahead (the replaced database
    is the copy), the snapshot fails, and the replaced database is kept, not dropped, with
    the data the restore replaced; writes come back and the run escalates naming it."""
    shop, corrupted_at, good, bad = await corrupted_shop(
        postgres, "shopf", bucket, tmp_path, events=10000
    )
    queue = f"ovf-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start(dev_env, queue, before=corrupted_at.isoformat())
        await approve(dev_env, f"{handle.id}-read-only-enter", "bob")
        await eventually(lambda: _gate_open(handle), 120)
        empty_and_delete(bucket)  # the backup is already checked and on local disk
        await approve(dev_env, handle.id, "carol")
        await approve(dev_env, f"{handle.id}-read-only-exit", "bob")
        report = await asyncio.wait_for(handle.result(), 300)

    assert report.status == RunStatus.ESCALATED, report.summary
    assert "THE SAFETY SNAPSHOT WAS NOT STORED" in report.summary
    assert "NoSuchBucket" in report.summary
    assert not [s for s in report.steps if "dropped the replaced" in s.summary]
    [kept] = databases_like(shop, "shopf_replaced_%")
    assert kept in report.summary
    with shop.connect(kept) as conn:
        assert fingerprint(conn) == bad, "the replaced data is whole in the kept database"
    with shop.connect() as conn:
        assert fingerprint(conn) == good
        conn.execute("INSERT INTO customers (email, name, created_at) VALUES ('f@x', 'f', now())")


async def _gate_open(handle: Handle) -> bool:
    try:
        return await handle.query(RunbookWorkflow.pending_gate) is not None
    except Exception:
        return False


async def test_a_worker_killed_while_the_snapshot_ships_is_replaced_and_one_snapshot_is_kept(
    dev_env: WorkflowEnvironment, postgres: PostgresServer, bucket: str, tmp_path: Path
) -> None:
    """SIGKILL the worker while pg_dump streams the replaced database to S3. Meanwhile the
    replaced database still holds the replaced data; the next worker dumps it again under
    the same key, checks it, and only then drops the replaced database."""
    shop, corrupted_at, good, bad = await corrupted_shop(
        postgres, "shopks", bucket, tmp_path, events=1500000
    )
    queue = f"ovk-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "REMEDIATE_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "REMEDIATE_TASK_QUEUE": queue,
    }

    def spawn_worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "workers.worker"], env=env)

    first, second = spawn_worker(), None
    try:
        handle = await start(dev_env, queue, before=corrupted_at.isoformat())
        await approve(dev_env, f"{handle.id}-read-only-enter", "bob")
        await approve(dev_env, handle.id, "carol")

        async def dumping_the_replaced_database() -> bool:
            with shop.connect("postgres") as conn:
                row = conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE datname LIKE 'shopks_replaced_%' "
                    "AND application_name = 'pg_dump'"
                ).fetchone()
            return row is not None

        await eventually(dumping_the_replaced_database, seconds=120, every=0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        [replaced] = databases_like(shop, "shopks_replaced_%")
        with shop.connect(replaced) as conn:
            assert fingerprint(conn) == bad, "mid-overlap, the replaced data is whole"
        second = spawn_worker()
        await approve(dev_env, f"{handle.id}-read-only-exit", "bob")
        report = await asyncio.wait_for(handle.result(), 300)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=10)

    assert report.status == RunStatus.REMEDIATED, report.summary
    assert databases_like(shop, "shopks_%") == [], "dropped once its snapshot was checked"
    with shop.connect() as conn:
        assert fingerprint(conn) == good
    assert await _attempts(handle, "snapshot_replaced") >= 2, "the killed attempt was retried"
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="shop/safety/")
    dumps = [o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith(".dump")]
    assert len(dumps) == 1, dumps
    restore_copy(shop, bucket, dumps[0], "shopks_check", tmp_path)
    with shop.connect("shopks_check") as conn:
        assert fingerprint(conn) == bad, "the snapshot restores the replaced data"
    with shop.connect("postgres") as conn:
        conn.execute("DROP DATABASE shopks_check")


async def _attempts(handle: Handle, activity: str) -> int:
    """The highest attempt number any started `activity` reached in the run's history."""
    events = (await handle.fetch_history()).events
    scheduled = {
        e.event_id
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == activity
    }
    return max(
        (
            e.activity_task_started_event_attributes.attempt
            for e in events
            if e.HasField("activity_task_started_event_attributes")
            and e.activity_task_started_event_attributes.scheduled_event_id in scheduled
        ),
        default=0,
    )


async def test_a_backup_that_fails_its_check_while_writes_are_being_stopped_leaves_writes_on(
    dev_env: WorkflowEnvironment, postgres: PostgresServer, bucket: str, tmp_path: Path
) -> None:
    """The check runs beside the read-only child, whose gate waits for a person: a corrupt
    backup cancels the child before anyone approves it, and nothing is changed."""
    shop = create_shop(postgres, "shopbad", events=100)
    configure(tmp_path, shop, bucket)
    key = await take_backup("nightly-bad")
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=b"not the dump the manifest hashed")
    queue = f"ovc-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start(dev_env, queue)
        report = await asyncio.wait_for(handle.result(), 120)
        child = dev_env.client.get_workflow_handle(f"{handle.id}-read-only-enter")
        child_status = (await child.describe()).status

    assert report.status == RunStatus.ESCALATED, report.summary
    assert "is corrupt" in report.summary and "Nothing was changed" in report.summary
    assert child_status == WorkflowExecutionStatus.CANCELED
    with shop.connect() as conn:
        conn.execute("INSERT INTO events (kind) VALUES ('still writable')")


async def test_the_replaced_database_is_not_dropped_without_its_snapshot_in_s3(
    postgres: PostgresServer, bucket: str, tmp_path: Path
) -> None:
    """drop_replaced itself refuses, non-retryably, when the snapshot it was told to wait
    for is not in S3 as verified; the replaced database stays."""
    shop = create_shop(postgres, "shopd", events=10)
    configure(tmp_path, shop, bucket)
    with shop.connect("postgres") as conn:
        conn.execute("DROP DATABASE IF EXISTS shopd_replaced_t WITH (FORCE)")
        conn.execute("CREATE DATABASE shopd_replaced_t")
    admin = await dbs.connect(Connection(postgres.dsn()))
    try:
        await dbs.set_marker(
            admin, "shopd_replaced_t", {"remediate_run": "run-1", "role": "previous"}
        )
    finally:
        await admin.close()
    never_stored = Snapshot(
        bucket=bucket,
        key="shop/safety/shopd-never.dump",
        sha256="0" * 64,
        size=1,
        taken_at=datetime.now(UTC),
        database="shopd",
        row_counts={},
    )
    params = DropInput(
        target="shop-db", database="shopd_replaced_t", run="run-1", snapshot=never_stored
    )
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(drop_replaced, params)
    assert refused.value.type == "SnapshotMissing" and refused.value.non_retryable
    assert "is not in S3" in refused.value.message
    assert databases_like(shop, "shopd_replaced_t") == ["shopd_replaced_t"]


async def replaced_dump() -> int | None:
    """The pid of the pg_dump streaming a replaced database (the worker runs in this test's
    process, so it is our child), if one is running."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"pg_dump") and any(b"_replaced_" in a for a in argv):
            return int(entry.name)
    return None


async def test_writes_come_back_while_the_snapshot_ships_and_a_pause_keeps_the_replaced_data(
    dev_env: WorkflowEnvironment, postgres: PostgresServer, bucket: str, tmp_path: Path
) -> None:
    """The safety snapshot's pg_dump is held (SIGSTOP) from the switch on. The restored
    database is verified and writes come back while the snapshot has not been stored: the
    replaced database still holds the replaced data meanwhile. The kill switch is engaged
    before the dump finishes: the snapshot is stored, but the replaced database is not
    dropped, and the run says where it is kept."""
    shop, corrupted_at, good, bad = await corrupted_shop(
        postgres, "shopwb", bucket, tmp_path, events=300000
    )
    queue = f"ovw-{uuid.uuid4().hex[:6]}"
    held: int | None = None
    try:
        async with build_worker(dev_env.client, queue):
            handle = await start(dev_env, queue, before=corrupted_at.isoformat())
            await approve(dev_env, f"{handle.id}-read-only-enter", "bob")
            await approve(dev_env, handle.id, "carol")
            held = await eventually(replaced_dump, seconds=120, every=0.01)
            os.kill(held, signal.SIGSTOP)
            await approve(dev_env, f"{handle.id}-read-only-exit", "bob")
            with shop.connect() as conn:
                assert fingerprint(conn) == good, "the live database is the restored one"

            async def writable() -> bool:
                try:
                    with shop.connect() as conn:
                        conn.execute("INSERT INTO events (kind) VALUES ('writes are back')")
                    return True
                except psycopg.errors.ReadOnlySqlTransaction:
                    return False

            await eventually(writable, seconds=120)
            assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
            listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="shop/safety/")
            assert not listed.get("Contents"), "writes came back before the snapshot was stored"
            [replaced] = databases_like(shop, "shopwb_replaced_%")
            with shop.connect(replaced) as conn:
                assert fingerprint(conn) == bad, "meanwhile the replaced data is whole"
            envelope = dev_env.client.get_workflow_handle(safety_workflow_id(queue))
            await envelope.execute_update(
                "pause", switch("carol", "pause", envelope.id, "freeze"), result_type=SafetyStatus
            )
            os.kill(held, signal.SIGCONT)
            held = None
            report = await asyncio.wait_for(handle.result(), 300)
    finally:
        if held is not None:
            os.kill(held, signal.SIGCONT)

    assert report.status == RunStatus.STOPPED, report.summary
    assert "stopped by the kill switch before dropping the replaced database" in report.summary
    assert "paused by carol: freeze" in report.summary
    assert f"kept as {replaced}" in report.summary
    t = report.timeline
    assert t["verified"] <= t["writes_back"] <= t["snapshot_stored"]
    assert databases_like(shop, "shopwb_replaced_%") == [replaced]
    with shop.connect() as conn:
        rows = conn.execute("SELECT count(*) FROM events WHERE kind = 'writes are back'")
        assert rows.fetchone() == (1,)
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="shop/safety/")
    dumps = [o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith(".dump")]
    assert len(dumps) == 1, dumps
    restore_copy(shop, bucket, dumps[0], "shopwb_check", tmp_path)
    with shop.connect("shopwb_check") as conn:
        assert fingerprint(conn) == bad, "the stored snapshot restores the replaced data"
    with shop.connect("postgres") as conn:
        conn.execute("DROP DATABASE shopwb_check")
