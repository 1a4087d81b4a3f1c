"""pool_restart end to end: a real Temporal dev server, a real Postgres, the demo app over HTTP,
and the real activities."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from tests.support import (
    SIGNING_KEY_ENV,
    DemoApp,
    OrdersDatabase,
    Sessions,
    eventually,
    mint,
    record_history,
    start_signed,
    wait_for_gate,
    write_config,
)
from workers.worker import WORKFLOW_RUNNER, WORKFLOWS, build_worker
from workflows.models import RunbookInput, RunReport, RunStatus
from workflows.pool_restart import PoolRestartWorkflow

DSN_ENV = "ORDERS_DB_DSN_TEST"

CONFIG = """
[targets.orders-db]
kind = "postgres"
dsn = {{ env = "{dsn_env}" }}
health_url = "{app}/health"
restart = {{ url = "{app}/admin/restart", token = {{ env = "DEMO_ADMIN_TOKEN_TEST" }} }}

[runbooks.pool_restart]
usage_threshold = 0.25
idle_older_than_seconds = 2
terminate_batch_size = {batch}
terminate_batch_pause_seconds = {pause}
verify_consecutive = 2
verify_interval_seconds = 0.5
verify_deadline_seconds = 30

[runbooks.pool_restart.gate]
required_group = "engineering-leads"
remind_after = {remind}
abort_after = {abort}
"""


def configure(
    tmp_path: Path,
    orders_db: OrdersDatabase,
    demo_app: DemoApp,
    *,
    batch: int = 50,
    pause: float = 0.0,
    remind: int = 600,
    abort: int = 1800,
) -> Path:
    os.environ[DSN_ENV] = orders_db.admin_dsn
    os.environ["DEMO_ADMIN_TOKEN_TEST"] = demo_app.admin_token
    return write_config(
        tmp_path,
        CONFIG.format(
            dsn_env=DSN_ENV, app=demo_app.url, batch=batch, pause=pause, remind=remind, abort=abort
        ),
    )


@asynccontextmanager
async def worker(env: WorkflowEnvironment, task_queue: str) -> AsyncIterator[None]:
    async with build_worker(env.client, task_queue):
        yield


async def start(env: WorkflowEnvironment, task_queue: str) -> WorkflowHandle[Any, RunReport]:
    return await start_signed(
        env.client,
        "PoolRestartWorkflow",
        RunbookInput(target="orders-db", requested_by="alice", reason="Too many connections"),
        id=f"pool_restart-orders-db-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
        result_type=RunReport,
    )


async def test_lead_approval_terminates_exactly_the_stale_idle_sessions(
    dev_env: WorkflowEnvironment,
    orders_db: OrdersDatabase,
    demo_app: DemoApp,
    sessions: Sessions,
    tmp_path: Path,
) -> None:
    configure(tmp_path, orders_db, demo_app)
    queue = f"pg-{uuid.uuid4().hex[:6]}"
    with sessions.active() as busy:
        stale = sessions.open_idle(40)
        await asyncio.sleep(2.5)  # older than idle_older_than_seconds, like the busy one
        async with worker(dev_env, queue):
            handle = await start(dev_env, queue)
            gate = await wait_for_gate(handle)
            planned = {s["pid"] for s in gate.plan.parameters["sessions"]}
            assert planned == set(stale)
            fresh = sessions.open_idle(2)  # opened after the plan: not approved, must survive
            await handle.execute_update(
                PoolRestartWorkflow.approve,
                mint("bob", gate, "approve", "stale idle sessions"),
            )
            report = await handle.result()
            assert report.status == RunStatus.REMEDIATED, report.summary
            assert sessions.alive(stale) == set()
            assert sessions.alive([busy, *fresh]) == {busy, *fresh}

            history = await handle.fetch_history()
    history_json = json.dumps(history.to_json_dict())
    assert orders_db.superuser_password not in history_json
    assert orders_db.admin_dsn not in history_json
    assert os.environ[SIGNING_KEY_ENV] not in history_json
    assert demo_app.admin_token not in history_json
    await Replayer(
        workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=WORKFLOW_RUNNER
    ).replay_workflow(history)
    if os.environ.get("RECORD_HISTORIES"):
        record_history("pool_restart_approved", history)


async def test_rejection_and_timeout_leave_every_session_alive(
    dev_env: WorkflowEnvironment,
    orders_db: OrdersDatabase,
    demo_app: DemoApp,
    sessions: Sessions,
    tmp_path: Path,
) -> None:
    configure(tmp_path, orders_db, demo_app, remind=1, abort=3)
    stale = sessions.open_idle(30)
    await asyncio.sleep(2.5)
    queue = f"pg-{uuid.uuid4().hex[:6]}"
    async with worker(dev_env, queue):
        rejected = await start(dev_env, queue)
        gate = await wait_for_gate(rejected)
        await rejected.execute_update(PoolRestartWorkflow.reject, mint("carol", gate, "reject"))
        assert (await rejected.result()).status == RunStatus.REJECTED
        assert sessions.alive(stale) == set(stale)

        timed_out = await start(dev_env, queue)
        report = await timed_out.result()
        assert report.status == RunStatus.ABORTED
        assert "gate_reminder" in [s.kind for s in report.steps]
        assert sessions.alive(stale) == set(stale)


async def test_worker_killed_mid_termination_resumes_and_terminates_once(
    dev_env: WorkflowEnvironment,
    orders_db: OrdersDatabase,
    demo_app: DemoApp,
    sessions: Sessions,
    tmp_path: Path,
) -> None:
    config = configure(tmp_path, orders_db, demo_app, batch=4, pause=1.0)
    queue = f"pg-kill-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "REMEDIATE_CONFIG": str(config),
        "REMEDIATE_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "REMEDIATE_TASK_QUEUE": queue,
    }

    def spawn_worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "workers.worker"], env=env)

    first = spawn_worker()
    second: subprocess.Popen[bytes] | None = None
    try:
        with sessions.active() as busy:
            stale = sessions.open_idle(32)
            await asyncio.sleep(2.5)
            handle = await start(dev_env, queue)
            gate = await wait_for_gate(handle, seconds=60)
            await handle.execute_update(
                PoolRestartWorkflow.approve,
                mint("bob", gate, "approve"),
            )

            async def partly_terminated() -> bool:
                return 0 < len(sessions.alive(stale)) < len(stale) - 4

            await eventually(partly_terminated, seconds=30, every=0.1)
            first.send_signal(signal.SIGKILL)
            first.wait()
            assert sessions.alive(stale), "the kill must land before the action completed"
            second = spawn_worker()
            report = await asyncio.wait_for(handle.result(), timeout=120)

            assert report.status == RunStatus.REMEDIATED, report.summary
            assert sessions.alive(stale) == set()
            assert sessions.alive([busy]) == {busy}
            action = next(s for s in report.steps if s.kind == "action")
            result = action.details["result"]
            terminated, gone = result["terminated"], result["already_gone"]
            assert len(terminated) == len(set(terminated))
            assert set(terminated).isdisjoint(gone)
            assert set(terminated) | set(gone) == set(stale)
            history = await handle.fetch_history()
            attempts = [
                e.activity_task_started_event_attributes.attempt
                for e in history.events
                if e.HasField("activity_task_started_event_attributes")
            ]
            assert max(attempts) >= 2, "the termination activity was retried on the new worker"
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
