"""A restore of a ~1 GB database through the backup_restore runbook (auto-approved gates)
against a bare `pg_restore` of the same dump, in the same run, on the same Postgres.

The runbook does more than the bare restore, on purpose: it checks the backup's checksum and
archive while it stops writes, counts the live database's rows, restores into a scratch
database, validates it (row counts against the manifest, sanity queries), switches it in,
verifies while it streams a safety snapshot of the replaced database to S3, reads that
snapshot back, and only then drops the replaced database and re-enables writes. Printed:
both times, the ratio (trigger -> verified against the bare restore), each phase, and what
the run does after verification (the snapshot, writes back, the end of the run).

    .venv/bin/python -m benchmarks.restore [--rows 4000000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import boto3
import psycopg
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities.postgres.backups import snapshot_database
from activities.postgres.models import SnapshotInput
from activities.storage import s3
from benchmarks.signing import APPROVALS_TOML, key_env, signed
from infra.local_postgres import PG_BIN, PostgresServer, free_port, postgres_server
from infra.processes import server_process
from workers.worker import WORKFLOW_RUNNER, WORKFLOWS, activities_for
from workflows.models import RunbookInput, RunReport, RunStatus
from workflows.names import SEARCH_ATTRIBUTES

BIN = Path(sys.executable).parent

CONFIG = """
[targets.big-db]
kind = "postgres"
dsn = {{ env = "BENCH_BIG_DSN" }}

[targets.big-db.backups]
bucket = "bench-backups"
prefix = "big/"

{approvals}
[runbooks.backup_restore]
restore_jobs = 2
verify_consecutive = 1

[[runbooks.backup_restore.sanity_queries]]
name = "events"
sql = "SELECT count(*) FROM events"
min = 1

[runbooks.backup_restore.gate.auto_approve]
name = "bench"
actions = ["restore_database"]
max_affected = 10
allow_whole_target = true
# The plan drops the replaced database once it is verified (and its snapshot is in S3).
allow_irreversible = true

[runbooks.read_only.gate.auto_approve]
name = "bench"
actions = ["enter_read_only", "exit_read_only"]
max_affected = 10
allow_whole_target = true

[safety]
cooldown_seconds = 0
hourly_budget = 1000
"""

PHASES = (
    ("triggered", "writes_stopped", "find + check backup while entering read-only"),
    ("writes_stopped", "approved", "row counts with writes off, plan, approve"),
    ("approved", "restored", "restore into scratch"),
    ("restored", "switched", "validate, switch"),
    ("switched", "verified", "verify (snapshot shipping meanwhile)"),
)
# After "verified", off the measured path: the rest of the snapshot, read back from S3, then
# the drop of the replaced database and the read-only exit.
AFTER = (
    ("switched", "snapshot_stored", "safety snapshot of the replaced db, checked"),
    ("verified", "writes_back", "verified -> writes back on"),
)


def make_database(dsn: str, rows: int) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL,
                                       note text NOT NULL)"""
        )
        conn.execute(
            """CREATE TABLE events (id bigint PRIMARY KEY, customer_id bigint NOT NULL,
                 kind text NOT NULL, at timestamptz NOT NULL, body text NOT NULL)"""
        )
        conn.execute(
            "INSERT INTO customers SELECT i, 'c' || i || '@example.com', md5(i::text) "
            "FROM generate_series(1, 100000) i"
        )
        step = 500_000
        for start in range(1, rows + 1, step):
            conn.execute(
                """INSERT INTO events
                   SELECT i, 1 + i %% 100000, (ARRAY['view','click','buy'])[1 + i %% 3],
                          '2026-01-01'::timestamptz + i * interval '1 second',
                          md5(i::text) || md5((i * 7)::text) || md5((i * 13)::text)
                          || md5((i * 17)::text)
                   FROM generate_series(%s::bigint, %s::bigint) i""",
                [start, min(start + step - 1, rows)],
            )
        conn.execute("CREATE INDEX events_customer ON events (customer_id)")
        conn.execute("ANALYZE")
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        assert row is not None
        return int(row[0])


async def main(rows: int) -> None:
    with postgres_server() as pg, tempfile.TemporaryDirectory() as tmp:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE big")
        print(f"building the database ({rows} events)...", flush=True)
        size = make_database(pg.dsn("big"), rows)
        moto_port = free_port()
        moto = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)]
        with server_process(moto, moto_port, quiet=True):
            config = Path(tmp) / "bench.toml"
            config.write_text(CONFIG.format(approvals=APPROVALS_TOML))
            os.environ.update(
                {
                    "REMEDIATE_CONFIG": str(config),
                    **key_env(),
                    "BENCH_BIG_DSN": pg.dsn("big"),
                    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
                    "AWS_ACCESS_KEY_ID": "bench",
                    "AWS_SECRET_ACCESS_KEY": "bench",
                    "AWS_DEFAULT_REGION": "us-east-1",
                }
            )
            s3.s3_client.cache_clear()
            boto3.client("s3").create_bucket(Bucket="bench-backups")
            print("taking the backup...", flush=True)
            backup = await ActivityEnvironment().run(
                snapshot_database, SnapshotInput(target="big-db", purpose="backup", label="b1")
            )
            dump = Path(tmp) / "backup.dump"
            boto3.client("s3").download_file(backup.bucket, backup.key, str(dump))
            bare = [await bare_restore(pg, dump, "bare_before")]
            print("the runbook...", flush=True)
            await settle(pg.dsn())
            async with (
                await WorkflowEnvironment.start_local(
                    data_converter=pydantic_data_converter,
                    dev_server_existing_path=str(BIN / "temporal"),
                    search_attributes=SEARCH_ATTRIBUTES,
                ) as env,
                Worker(
                    env.client,
                    workflow_runner=WORKFLOW_RUNNER,
                    task_queue="bench",
                    workflows=WORKFLOWS,
                    activities=activities_for(env.client),
                ),
            ):
                workflow_id = f"backup_restore-big-{uuid.uuid4().hex[:6]}"
                report: RunReport = await env.client.execute_workflow(
                    "BackupRestoreWorkflow",
                    signed(
                        RunbookInput(target="big-db", requested_by="benchmark", reason="bench"),
                        workflow_id,
                    ),
                    id=workflow_id,
                    task_queue="bench",
                    result_type=RunReport,
                )
            assert report.status == RunStatus.REMEDIATED, report.summary
            bare.append(await bare_restore(pg, dump, "bare_after"))
    _print(report, size, backup.size, bare)


async def settle(dsn: str) -> None:
    """Start each measured restore from the same state: the previous one's dirty pages written
    and flushed. (Otherwise whichever restore runs second pays for the first one's writeback,
    which on this machine moved the ratio by a third.)"""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    await asyncio.to_thread(os.sync)


async def bare_restore(pg: PostgresServer, dump: Path, database: str) -> float:
    """`pg_restore --jobs=2` of the dump into a new database, timed; the database is dropped."""
    dsn = pg.dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    await settle(dsn)
    print(f"bare pg_restore ({database})...", flush=True)
    started = time.monotonic()
    argv = ["--exit-on-error", "--jobs=2", "-d", pg.dsn(database), str(dump)]
    process = await asyncio.create_subprocess_exec(str(PG_BIN / "pg_restore"), *argv)
    assert await process.wait() == 0, "bare pg_restore failed"
    seconds = time.monotonic() - started
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {database}")
    return seconds


def _print(report: RunReport, size: int, dump_size: int, bare: list[float]) -> None:
    t = report.timeline
    total = (t["verified"] - t["triggered"]).total_seconds()
    restore_step = next(
        s.details["result"]["seconds"]
        for s in report.steps
        if s.kind == "action" and "restored into" in s.summary
    )
    print(f"database {size / 1e9:.2f} GB on disk, dump {dump_size / 1e9:.2f} GB (pg_dump -Fc)")
    mean = sum(bare) / len(bare)
    print(f"bare pg_restore --jobs=2, before and after:   {bare[0]:7.1f} s, {bare[1]:.1f} s "
          f"(mean {mean:.1f} s)")  # fmt: skip
    print(f"runbook restore step (scratch, resumable):    {restore_step:7.1f} s "
          f"({restore_step / mean:.2f}x bare)")  # fmt: skip
    print(f"runbook trigger -> verified:                  {total:7.1f} s "
          f"({total / mean:.2f}x bare; target <= 2x)")  # fmt: skip
    _phases(t, PHASES)
    print("after verification (the run keeps the replaced database until its snapshot is in S3):")
    _phases(t, AFTER)
    if report.finished_at is not None:
        whole = (report.finished_at - t["triggered"]).total_seconds()
        stopped = (t.get("writes_back", report.finished_at) - t["writes_stopped"]).total_seconds()
        print(f"  {'trigger -> run finished':<44} {whole:7.1f} s")
        print(f"  {'writes off (read-only) for':<44} {stopped:7.1f} s")


def _phases(timeline: dict[str, datetime], phases: tuple[tuple[str, str, str], ...]) -> None:
    for start, end, label in phases:
        if start in timeline and end in timeline:
            seconds = (timeline[end] - timeline[start]).total_seconds()
            print(f"  {label:<44} {seconds:7.1f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4_000_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(args.rows))
