"""backup_restore end to end: moto's server for S3, a real Postgres with a shop database of
several tables and about 100k rows, a real Temporal dev server.

A backup is taken (by the engine's own snapshot activity, as a nightly job would), the data
is corrupted (rows deleted and changed), and the runbook restores it: counts and a checksum
of every table match the backup; the safety snapshot it took restores the corrupted state; a
worker killed mid-restore is replaced and the restore resumes without starting over.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.postgres import databases as dbs
from activities.postgres.backups import snapshot_database
from activities.postgres.client_tools import Connection
from activities.postgres.models import Snapshot, SnapshotInput
from infra.local_postgres import PG_BIN, PostgresServer
from tests.one_attempt import OneAttemptInput, OneAttemptWorkflow
from tests.support import eventually, mint, record_history, start_signed, write_config
from workers.worker import WORKFLOW_RUNNER, WORKFLOWS, build_worker
from workflows.backup_restore import BackupRestoreWorkflow
from workflows.models import GateView, RunbookInput, RunReport, RunStatus
from workflows.runbook import RunbookWorkflow

Handle = WorkflowHandle[Any, RunReport]
TABLES = ("customers", "orders", "order_items", "events")
RECORDED_ID = "backup_restore-shop-db"

CONFIG = """
[targets.shop-db]
kind = "postgres"
dsn = {{ env = "SHOP_DSN_TEST" }}

[targets.shop-db.backups]
bucket = "{bucket}"
prefix = "shop/"

[runbooks.backup_restore]
restore_jobs = {jobs}
heartbeat_timeout_seconds = 4
verify_consecutive = 1
verify_interval_seconds = 0.2

[[runbooks.backup_restore.sanity_queries]]
name = "every order has a customer"
sql = '''SELECT count(*) FROM orders o
         LEFT JOIN customers c ON c.id = o.customer_id WHERE c.id IS NULL'''
max = 0

[[runbooks.backup_restore.sanity_queries]]
name = "orders"
sql = "SELECT count(*) FROM orders"
min = 1

[runbooks.backup_restore.gate]
required_group = "engineering-leads"

[runbooks.read_only]
verify_consecutive = 1
verify_interval_seconds = 0.2
"""


@dataclass
class Shop:
    admin: PostgresServer
    database: str

    @property
    def dsn(self) -> str:
        return self.admin.dsn(self.database)

    def connect(self, database: str | None = None) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin.dsn(database or self.database), autocommit=True)


def fingerprint(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, str]]:
    """Row count and an md5 over every row, per table, in key order."""
    out = {}
    for table in TABLES:
        row = conn.execute(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) "
            f"FROM {table} t"
        ).fetchone()
        assert row is not None
        out[table] = (int(row[0]), str(row[1]))
    return out


def create_shop(server: PostgresServer, name: str, events: int) -> Shop:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    shop = Shop(server, name)
    with shop.connect() as conn:
        conn.execute(
            """
            CREATE TABLE customers (id bigserial PRIMARY KEY, email text UNIQUE NOT NULL,
                                    name text NOT NULL, created_at timestamptz NOT NULL);
            CREATE TABLE orders (id bigserial PRIMARY KEY,
                                 customer_id bigint NOT NULL REFERENCES customers(id),
                                 total_cents integer NOT NULL, status text NOT NULL);
            CREATE INDEX orders_customer ON orders (customer_id);
            CREATE TABLE order_items (id bigserial PRIMARY KEY,
                                      order_id bigint NOT NULL REFERENCES orders(id),
                                      sku text NOT NULL, quantity integer NOT NULL);
            CREATE TABLE events (id bigserial PRIMARY KEY, kind text NOT NULL, payload jsonb);
            INSERT INTO customers (email, name, created_at)
              SELECT 'c' || i || '@example.com', 'Customer ' || i,
                     '2026-01-01'::timestamptz + i * interval '1 minute'
              FROM generate_series(1, 10000) i;
            INSERT INTO orders (customer_id, total_cents, status)
              SELECT 1 + (i::bigint * 7919) % 10000, (i * 31) % 50000,
                     (ARRAY['paid','shipped','open'])[1 + i % 3]
              FROM generate_series(1, 40000) i;
            INSERT INTO order_items (order_id, sku, quantity)
              SELECT 1 + (i::bigint * 104729) % 40000, 'SKU-' || (i % 997), 1 + i % 5
              FROM generate_series(1, 40000) i;
            """
        )
        conn.execute(
            "INSERT INTO events (kind, payload) SELECT 'page_view', "
            "jsonb_build_object('n', i, 'path', '/p/' || (i %% 1000)) "
            "FROM generate_series(1, %s) i",
            [events],
        )
        conn.execute("ANALYZE")
    return shop


def corrupt(shop: Shop) -> None:
    """What a bad migration does: deletes and changes rows."""
    with shop.connect() as conn:
        conn.execute("DELETE FROM order_items WHERE order_id % 10 = 0")
        conn.execute("UPDATE orders SET total_cents = 0, status = 'lost' WHERE id % 7 = 0")
        conn.execute("DELETE FROM events WHERE id % 3 = 0")


@pytest.fixture(scope="module")
def aws(aws_env: str) -> str:
    bucket = f"backups-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return bucket


def configure(tmp_path: Path, shop: Shop, bucket: str, jobs: int = 2) -> Path:
    os.environ["SHOP_DSN_TEST"] = shop.dsn
    return write_config(tmp_path, CONFIG.format(bucket=bucket, jobs=jobs))


async def take_backup(label: str) -> str:
    snapshot = await ActivityEnvironment().run(
        snapshot_database, SnapshotInput(target="shop-db", purpose="backup", label=label)
    )
    return snapshot.key


async def approve_gates(env: WorkflowEnvironment, workflow_id: str, who: list[str]) -> None:
    """Approve, in order, the read-only entry (child), the restore, and the read-only exit
    (child) as they open."""
    ids = [f"{workflow_id}-read-only-enter", workflow_id, f"{workflow_id}-read-only-exit"]
    for gate_of, approver in zip(ids, who, strict=True):
        handle = env.client.get_workflow_handle(gate_of)

        async def probe(handle: WorkflowHandle[Any, Any] = handle) -> GateView | None:
            try:
                return await handle.query(RunbookWorkflow.pending_gate)
            except Exception:
                return None

        gate = await eventually(probe, 120)
        await handle.execute_update(RunbookWorkflow.approve, mint(approver, gate, "approve"))


async def start(
    env: WorkflowEnvironment, queue: str, workflow_id: str | None = None, **params: str
) -> Handle:
    return await start_signed(
        env.client,
        BackupRestoreWorkflow.run,
        RunbookInput(target="shop-db", requested_by="alice", parameters=params),
        id=workflow_id or f"backup_restore-shop-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
    )


def restore_copy(shop: Shop, bucket: str, key: str, into: str, tmp_path: Path) -> None:
    """What a person does with the safety snapshot: download it and pg_restore it."""
    path = tmp_path / "snapshot.dump"
    boto3.client("s3").download_file(bucket, key, str(path))
    with shop.connect("postgres") as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {into} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {into}")
    subprocess.run(
        [str(PG_BIN / "pg_restore"), "--exit-on-error", "--no-owner", "-d",
         shop.admin.dsn(into), str(path)],
        check=True,
    )  # fmt: skip


async def test_restores_a_corrupted_database_to_its_backup_and_keeps_a_safety_snapshot(
    dev_env: WorkflowEnvironment, postgres: PostgresServer, aws: str, tmp_path: Path
) -> None:
    shop = create_shop(postgres, "shop", events=10000)
    configure(tmp_path, shop, aws)
    backup_key = await take_backup("nightly-1")
    with shop.connect() as conn:
        good = fingerprint(conn)
    assert sum(n for n, _ in good.values()) == 100000
    await asyncio.sleep(1.1)
    corrupted_at = datetime.now(UTC)
    corrupt(shop)
    with shop.connect() as conn:
        bad = fingerprint(conn)
    assert bad != good
    await take_backup("after-the-bad-migration")  # newer, but after the corruption

    queue = f"br-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        # The replay test names a history by its workflow id (child ids derive from it).
        handle = await start(dev_env, queue, RECORDED_ID, before=corrupted_at.isoformat())
        await approve_gates(dev_env, handle.id, ["bob", "carol", "bob"])
        report = await asyncio.wait_for(handle.result(), 300)

    assert report.status == RunStatus.REMEDIATED, report.summary
    plan = next(s for s in report.steps if s.kind == "plan" and "restore" in s.summary)
    assert backup_key in report.summary and "data-loss window" in report.summary
    with shop.connect() as conn:
        assert fingerprint(conn) == good
        conn.execute("INSERT INTO customers (email, name, created_at) VALUES ('n@x', 'n', now())")
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()]
    assert [n for n in names if n.startswith("shop_")] == [], "scratch and replaced are gone"
    snapshot = next(s for s in report.steps if s.kind == "snapshot")
    snapshot_key = snapshot.summary.split(f"s3://{aws}/", 1)[1].split(" ", 1)[0]
    restore_copy(shop, aws, snapshot_key, "shop_check", tmp_path)
    with shop.connect("shop_check") as conn:
        assert fingerprint(conn) == bad, "the safety snapshot holds the state before the restore"
    recorded = await handle.fetch_history()
    assert postgres.password not in json.dumps(recorded.to_json_dict())
    await Replayer(
        workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=WORKFLOW_RUNNER
    ).replay_workflow(recorded)
    if os.environ.get("RECORD_HISTORIES"):
        record_history(RECORDED_ID, recorded)
    assert plan.details["plan"]["parameters"]["backup"].endswith(backup_key)
    # The plan lists every effect (the snapshot shipped after the switch among them); the
    # drop, which waits for that snapshot, cannot be undone, so the plan is not reversible.
    impact = plan.details["plan"]["expected_impact"]
    assert [e["undoable"] for e in impact["effects"]] == [True, True, True, False]
    assert snapshot_key in impact["effects"][2]["what"]
    assert "only once" in impact["effects"][3]["what"]
    assert "DROP DATABASE shop_replaced_" in impact["effects"][3]["what"]
    assert impact["reversible"] is False
    kinds = [s.kind for s in report.steps]
    assert kinds.index("snapshot") < kinds.index("action", kinds.index("snapshot")), (
        "the replaced database is dropped only after its snapshot was read back"
    )


async def test_no_backup_before_the_corruption_escalates_without_touching_anything(
    dev_env: WorkflowEnvironment, postgres: PostgresServer, aws: str, tmp_path: Path
) -> None:
    shop = create_shop(postgres, "shop_empty_history", events=10)
    configure(tmp_path, shop, aws)
    queue = f"br-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start(dev_env, queue, before="2001-01-01T00:00:00Z")
        report = await asyncio.wait_for(handle.result(), 60)
    assert report.status == RunStatus.ESCALATED
    assert "no backup" in report.summary and "Nothing was changed" in report.summary


async def test_a_worker_killed_mid_restore_is_replaced_and_the_restore_resumes(
    dev_env: WorkflowEnvironment, postgres: PostgresServer, aws: str, tmp_path: Path
) -> None:
    shop = create_shop(postgres, "shopk", events=1500000)
    config = configure(tmp_path, shop, aws, jobs=1)
    await take_backup("nightly-k")
    with shop.connect() as conn:
        good = fingerprint(conn)
    await asyncio.sleep(1.1)
    corrupted_at = datetime.now(UTC)
    corrupt(shop)
    queue = f"brk-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "REMEDIATE_CONFIG": str(config),
        "REMEDIATE_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "REMEDIATE_TASK_QUEUE": queue,
    }

    def spawn_worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "workers.worker"], env=env)

    first, second = spawn_worker(), None
    try:
        handle = await start(dev_env, queue, before=corrupted_at.isoformat())
        approvals = asyncio.create_task(approve_gates(dev_env, handle.id, ["bob", "carol", "bob"]))

        async def restoring_part_done() -> bool:
            with shop.connect("postgres") as conn:
                row = conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'shopk_restore_%'"
                ).fetchone()
            if row is None:
                return False
            try:
                with shop.connect(row[0]) as scratch:
                    customers = scratch.execute("SELECT count(*) FROM customers").fetchone()
                    events = scratch.execute("SELECT count(*) FROM events").fetchone()
            except psycopg.Error:
                return False
            return bool(customers and customers[0] > 0 and events and events[0] == 0)

        await eventually(restoring_part_done, seconds=120, every=0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = spawn_worker()
        await approvals
        report = await asyncio.wait_for(handle.result(), 300)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
    assert report.status == RunStatus.REMEDIATED, report.summary
    action = next(s for s in report.steps if s.kind == "action" and "restored into" in s.summary)
    assert "public.customers" in action.details["result"]["resumed_tables"]
    with shop.connect() as conn:
        assert fingerprint(conn) == good


async def test_a_cancelled_restore_drops_its_scratch_database_and_keeps_writes_off(
    dev_env: WorkflowEnvironment, postgres: PostgresServer, aws: str, tmp_path: Path
) -> None:
    shop = create_shop(postgres, "shopc", events=1500000)
    configure(tmp_path, shop, aws, jobs=1)
    await take_backup("nightly-c")
    await asyncio.sleep(1.1)
    corrupted_at = datetime.now(UTC)
    corrupt(shop)
    with shop.connect() as conn:
        bad = fingerprint(conn)
    queue = f"brc-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start(dev_env, queue, before=corrupted_at.isoformat())
        approvals = asyncio.create_task(approve_gates(dev_env, handle.id, ["bob", "carol", "bob"]))

        async def restoring() -> bool:
            with shop.connect("postgres") as conn:
                row = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname LIKE 'shopc_restore_%'"
                ).fetchone()
            return row is not None

        await eventually(restoring, seconds=120, every=0.05)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 120)
        approvals.cancel()
        report = await handle.query(BackupRestoreWorkflow.report)
    assert report.status == RunStatus.CANCELLED, report.summary
    assert "dropped the half-restored" in report.summary
    assert "STILL READ-ONLY" in report.summary and "--param phase=exit" in report.summary
    with shop.connect("postgres") as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()]
        setting = conn.execute(
            "SELECT setconfig FROM pg_db_role_setting s "
            "JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = 'shopc'"
        ).fetchone()
    assert [n for n in names if n.startswith("shopc_")] == [], "no scratch database is left"
    assert setting is not None and "default_transaction_read_only=on" in setting[0]
    with shop.connect() as conn:
        assert fingerprint(conn) == bad, "the live database was not touched"


async def test_a_failed_switch_leaves_the_live_database_accepting_connections(
    postgres: PostgresServer,
) -> None:
    """The renames fail (here: the database to switch in is gone): the live database keeps
    its name and takes connections again, instead of being left with ALLOW_CONNECTIONS
    false."""
    shop = create_shop(postgres, "shopsw", events=10)
    admin = await dbs.connect(Connection(postgres.dsn()))
    try:
        with pytest.raises(psycopg.errors.InvalidCatalogName):
            await dbs.swap(admin, "shopsw", "shopsw_replaced", "shopsw", "shopsw_restore_gone")
    finally:
        await admin.close()
    with shop.connect("postgres") as conn:
        row = conn.execute(
            "SELECT datallowconn FROM pg_database WHERE datname = 'shopsw'"
        ).fetchone()
    assert row == (True,)
    with shop.connect() as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (10,)


async def test_a_snapshot_heartbeats_while_a_locked_table_is_counted(
    dev_env: WorkflowEnvironment, postgres: PostgresServer, aws: str, tmp_path: Path
) -> None:
    """Scenario 8 of issue 13: the snapshot counted every table before its first heartbeat.
    Here a migration holds `orders` locked for three heartbeat timeouts while the snapshot
    counts it; the one attempt it is given still finishes, with the right counts."""
    shop = create_shop(postgres, "shop_locked", events=100)
    configure(tmp_path, shop, aws)
    with shop.connect() as conn:
        expected = fingerprint(conn)
    queue = f"snap-{uuid.uuid4().hex[:6]}"
    heartbeat_timeout = 1.0
    worker = Worker(
        dev_env.client,
        task_queue=queue,
        workflows=[OneAttemptWorkflow],
        activities=[snapshot_database],
        workflow_runner=WORKFLOW_RUNNER,
    )
    async with worker:
        with shop.connect() as migration, migration.transaction():
            migration.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
            handle = await dev_env.client.start_workflow(
                OneAttemptWorkflow.run,
                OneAttemptInput(
                    activity="snapshot_database",
                    argument=SnapshotInput(target="shop-db", label="locked").model_dump(),
                    heartbeat_timeout_seconds=heartbeat_timeout,
                ),
                id=f"snapshot-locked-{uuid.uuid4().hex[:6]}",
                task_queue=queue,
            )

            async def counting_waits_for_the_lock() -> bool:
                # From another session: pg_stat_activity holds still inside a transaction.
                with shop.connect() as conn:
                    row = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'shop_locked' "
                        "AND application_name = 'remediation-engine' "
                        "AND wait_event_type = 'Lock'"
                    ).fetchone()
                return bool(row and row[0])

            await eventually(counting_waits_for_the_lock, seconds=30, every=0.05)
            await asyncio.sleep(3 * heartbeat_timeout)
        snapshot = Snapshot.model_validate(await asyncio.wait_for(handle.result(), 60))
    assert snapshot.row_counts == {f"public.{t}": n for t, (n, _) in expected.items()}
    history = await handle.fetch_history()
    started = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert started == [1], "one attempt, never timed out"
