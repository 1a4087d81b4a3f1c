"""What the engine costs over a bare workflow: pool_restart with auto-approval against a plain
Temporal workflow calling the same activities in the same order, same server, same run.

Each iteration opens the same number of stale idle sessions on a real Postgres, then runs one
workflow to completion; only the workflow's wall time (start to result) is measured. Runs
alternate between the two kinds so drift on a busy machine hits both alike.

    .venv/bin/python -m benchmarks.overhead [--iterations 15] [--sessions 10]   (make bench)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from benchmarks.bare_workflow import BareSequenceWorkflow
from benchmarks.signing import APPROVALS_TOML, key_env, signed
from infra.local_postgres import free_port, postgres_server, wait_for_port
from workers.worker import WORKFLOW_RUNNER, WORKFLOWS, activities_for
from workflows.models import RunbookInput, RunReport, RunStatus
from workflows.names import SEARCH_ATTRIBUTES

BIN = Path(sys.executable).parent
TIMEOUT = timedelta(seconds=60)

CONFIG = """
[targets.bench-db]
kind = "postgres"
dsn = {{ env = "BENCH_DB_DSN" }}
health_url = "{app}/health"

{approvals}
[runbooks.pool_restart]
usage_threshold = 0.2
idle_older_than_seconds = 1
verify_consecutive = 1
verify_interval_seconds = 0.2

# The benchmark acts on one target hundreds of times an hour, on purpose.
[safety]
cooldown_seconds = 0
hourly_budget = 100000

[runbooks.pool_restart.gate.auto_approve]
name = "bench"
actions = ["terminate_idle_sessions"]
max_affected = 1000
max_share = 0.5
allow_irreversible = true
"""


async def _open_stale(dsn: str, count: int) -> list[psycopg.AsyncConnection[Any]]:
    conns = [
        await psycopg.AsyncConnection.connect(dsn, application_name="bench-app")
        for _ in range(count)
    ]
    await asyncio.sleep(1.2)
    return conns


async def _measure(
    env: WorkflowEnvironment, queue: str, kind: str, app_dsn: str, sessions: int
) -> float:
    conns = await _open_stale(app_dsn, sessions)
    started = time.perf_counter()
    if kind == "runbook":
        workflow_id = f"bench-runbook-{uuid.uuid4().hex[:8]}"
        report: RunReport = await env.client.execute_workflow(
            "PoolRestartWorkflow",
            signed(RunbookInput(target="bench-db", requested_by="benchmark"), workflow_id),
            id=workflow_id,
            task_queue=queue,
            result_type=RunReport,
            execution_timeout=TIMEOUT,
        )
        assert report.status == RunStatus.REMEDIATED, report.summary
    else:
        passed = await env.client.execute_workflow(
            BareSequenceWorkflow.run,
            "bench-db",
            id=f"bench-bare-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
            execution_timeout=TIMEOUT,
        )
        assert passed
    elapsed = time.perf_counter() - started
    for conn in conns:
        await conn.close()
    return elapsed


async def main(iterations: int, sessions: int) -> None:
    with postgres_server(max_connections=100) as pg, tempfile.TemporaryDirectory() as tmp:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("CREATE ROLE app LOGIN PASSWORD 'bench-app-pw'")
            conn.execute("CREATE DATABASE bench OWNER app")
        app_dsn = pg.dsn("bench", user="app", password="bench-app-pw")
        port = free_port()
        app = subprocess.Popen(
            [
                str(BIN / "uvicorn"),
                "infra.demo_app:app",
                "--port",
                str(port),
                "--log-level",
                "error",
            ],
            env={**os.environ, "DEMO_DATABASE_URL": app_dsn},
        )
        try:
            wait_for_port("127.0.0.1", port, 30)
            config = Path(tmp) / "bench.toml"
            config.write_text(
                CONFIG.format(approvals=APPROVALS_TOML, app=f"http://127.0.0.1:{port}")
            )
            os.environ.update(
                REMEDIATE_CONFIG=str(config),
                BENCH_DB_DSN=pg.dsn("bench"),
                **key_env(),
            )
            # Connections the runbook must leave alone (superusers), so the stale idle ones are
            # under the 50% blast radius that auto-approval may never exceed.
            held = [psycopg.connect(pg.dsn("bench")) for _ in range(sessions + 5)]
            try:
                await _run(iterations, sessions, app_dsn)
            finally:
                for conn in held:
                    conn.close()
        finally:
            app.terminate()
            app.wait(timeout=10)


async def _run(iterations: int, sessions: int, app_dsn: str) -> None:
    async with await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=SEARCH_ATTRIBUTES,
    ) as env:
        queue = "bench"
        async with Worker(
            env.client,
            workflow_runner=WORKFLOW_RUNNER,
            task_queue=queue,
            workflows=[*WORKFLOWS, BareSequenceWorkflow],
            activities=activities_for(env.client),
        ):
            for kind in ("runbook", "bare"):  # warm-up: imports, connections, sandbox
                await _measure(env, queue, kind, app_dsn, sessions)
            times: dict[str, list[float]] = {"runbook": [], "bare": []}
            for i in range(iterations):
                order = ("runbook", "bare") if i % 2 == 0 else ("bare", "runbook")
                for kind in order:
                    times[kind].append(await _measure(env, queue, kind, app_dsn, sessions))
    runbook, bare = statistics.median(times["runbook"]), statistics.median(times["bare"])
    print(f"iterations: {iterations} each, {sessions} stale idle sessions terminated per run")
    print(f"pool_restart runbook (auto-approved) median: {runbook * 1000:.1f} ms")
    print(f"bare workflow, same activities       median: {bare * 1000:.1f} ms")
    print(f"overhead ratio: {runbook / bare:.2f}x ({(runbook - bare) * 1000:+.1f} ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--sessions", type=int, default=10)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(args.iterations, args.sessions))
