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

from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.postgres.models import TerminateSessionsResult, TerminationProgress
from infra.local_postgres import PostgresServer
from tests.slow_link import slow_link
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
from workflows.policies import batch_heartbeat_timeout
from workflows.pool_restart import PoolRestartWorkflow

Handle = WorkflowHandle[Any, RunReport]

DSN_ENV = "ORDERS_DB_DSN_TEST"

CONFIG = """
[targets.orders-db]
kind = "postgres"
dsn = {{ env = "{dsn_env}" }}
health_url = "{app}/health"
restart = {{ url = "{app}/admin/restart", token = {{ env = "DEMO_ADMIN_TOKEN_TEST" }} }}

[runbooks.pool_restart]
usage_threshold = 0.25
idle_older_than_seconds = {idle}
terminate_batch_size = {batch}
terminate_batch_pause_seconds = {pause}
verify_consecutive = 2
verify_interval_seconds = 0.5
verify_deadline_seconds = 30

[runbooks.pool_restart.gate]
required_group = "engineering-leads"
remind_after = {remind}
abort_after = {abort}
refresh_after = {refresh}
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
    idle: int = 2,
    refresh: int = 120,
) -> Path:
    os.environ[DSN_ENV] = orders_db.admin_dsn
    os.environ["DEMO_ADMIN_TOKEN_TEST"] = demo_app.admin_token
    return write_config(
        tmp_path,
        CONFIG.format(
            dsn_env=DSN_ENV,
            app=demo_app.url,
            batch=batch,
            pause=pause,
            remind=remind,
            abort=abort,
            idle=idle,
            refresh=refresh,
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


def attempts_of(history: WorkflowHistory, activity: str) -> list[int]:
    """The attempt each completed run of `activity` was (a history keeps the last one)."""
    scheduled = {
        e.event_id
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == activity
    }
    return [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and e.activity_task_started_event_attributes.scheduled_event_id in scheduled
    ]


async def test_a_batch_pause_longer_than_ten_seconds_completes_on_the_first_attempt(
    dev_env: WorkflowEnvironment,
    orders_db: OrdersDatabase,
    demo_app: DemoApp,
    sessions: Sessions,
    tmp_path: Path,
) -> None:
    """Issue 13, scenario 8: the termination slept its configured pause between heartbeats
    under a fixed 10 s heartbeat timeout, so a pause over 10 s timed every attempt out."""
    pause = 11.0
    configure(tmp_path, orders_db, demo_app, batch=13, pause=pause)
    stale = sessions.open_idle(26)
    await asyncio.sleep(2.5)
    queue = f"pg-pause-{uuid.uuid4().hex[:6]}"
    async with worker(dev_env, queue):
        handle = await start(dev_env, queue)
        gate = await wait_for_gate(handle)
        await handle.execute_update(PoolRestartWorkflow.approve, mint("bob", gate, "approve"))
        report = await asyncio.wait_for(handle.result(), 90)
    assert report.status == RunStatus.REMEDIATED, report.summary
    assert sessions.alive(stale) == set()
    history = await handle.fetch_history()
    assert attempts_of(history, "terminate_sessions") == [1], "never timed out"
    [scheduled] = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "terminate_sessions"
    ]
    assert scheduled.heartbeat_timeout.ToTimedelta() == batch_heartbeat_timeout(pause)


async def recorded_progress(env: WorkflowEnvironment, handle: Handle) -> TerminationProgress:
    """What the server holds from the pending termination's last heartbeat."""
    description = await handle.describe()
    [pending] = description.raw_description.pending_activities
    [details] = await env.client.data_converter.decode(pending.heartbeat_details.payloads)
    return TerminationProgress.model_validate(details)


async def test_sessions_a_killed_worker_terminated_are_reported_as_the_engines(
    dev_env: WorkflowEnvironment,
    postgres: PostgresServer,
    orders_db: OrdersDatabase,
    demo_app: DemoApp,
    sessions: Sessions,
    tmp_path: Path,
) -> None:
    """Issue 13, scenario 10: after a worker died mid-termination, the sessions it had ended
    but not yet reported were counted as "already gone". The first worker is killed after
    Postgres ended the second batch and before the engine heard of it (its answers come over
    a slow link); two sessions of the last batch then close on their own. The retry counts
    the batch the first attempt recorded as the engine's, and only those two as gone."""
    config = configure(tmp_path, orders_db, demo_app, batch=4, pause=1.0)
    queue = f"pg-kill-{uuid.uuid4().hex[:6]}"
    first: subprocess.Popen[bytes] | None = None
    second: subprocess.Popen[bytes] | None = None
    async with slow_link(postgres.host, postgres.port) as link:
        env = {
            **os.environ,
            DSN_ENV: link.dsn(orders_db.admin_dsn),
            "REMEDIATE_CONFIG": str(config),
            "REMEDIATE_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "REMEDIATE_TASK_QUEUE": queue,
        }

        def spawn_worker() -> subprocess.Popen[bytes]:
            return subprocess.Popen([sys.executable, "-m", "workers.worker"], env=env)

        try:
            first = spawn_worker()
            with sessions.active() as busy:
                stale = sessions.open_idle(32)
                await asyncio.sleep(2.5)
                handle = await start(dev_env, queue)
                gate = await wait_for_gate(handle, seconds=60)
                planned = [int(s["pid"]) for s in gate.plan.parameters["sessions"]]
                assert set(planned) == set(stale)
                link.delay = 0.4  # Postgres's answers now reach the engine 0.4 s late
                await handle.execute_update(
                    PoolRestartWorkflow.approve, mint("bob", gate, "approve")
                )

                async def second_batch_gone() -> bool:
                    return not sessions.alive(planned[4:8])

                await eventually(second_batch_gone, seconds=60, every=0.02)
                first.send_signal(signal.SIGKILL)
                first.wait()
                recorded = await recorded_progress(dev_env, handle)
                assert recorded.in_flight == planned[4:8], "recorded before it was terminated"
                assert sorted(recorded.done.terminated) == sorted(planned[:4])
                left_on_their_own = planned[-2:]
                sessions.leave(left_on_their_own)

                async def left() -> bool:
                    return not sessions.alive(left_on_their_own)

                await eventually(left, seconds=10)
                link.delay = 0.0
                second = spawn_worker()
                report = await asyncio.wait_for(handle.result(), 120)

                assert report.status == RunStatus.REMEDIATED, report.summary
                assert sessions.alive(stale) == set()
                assert sessions.alive([busy]) == {busy}
        finally:
            for process in (first, second):
                if process is not None and process.poll() is None:
                    process.terminate()
                    process.wait(timeout=10)
    action = next(s for s in report.steps if s.kind == "action")
    result = TerminateSessionsResult.model_validate(action.details["result"])
    assert sorted(result.terminated) == sorted(set(planned) - set(left_on_their_own))
    assert sorted(result.terminated_unreported) == sorted(planned[4:8])
    assert sorted(result.already_gone) == sorted(left_on_their_own)
    assert result.skipped_no_longer_idle == []
    assert action.summary == (
        "terminated 30 sessions (4 of them by an attempt that died before reporting; "
        "2 already gone, 0 became active and were spared)"
    )
    assert attempts_of(await handle.fetch_history(), "terminate_sessions") == [2]


async def test_a_waiting_restart_plan_gives_way_to_terminating_sessions_once_they_are_idle(
    dev_env: WorkflowEnvironment,
    orders_db: OrdersDatabase,
    demo_app: DemoApp,
    sessions: Sessions,
    tmp_path: Path,
) -> None:
    """Issue 13, scenario 9: the alert fires before any session has been idle long enough, so
    the plan is the heavier application restart. While its gate waits the run looks again;
    once the sessions are idle long enough, the gate closes as superseded and a new gate
    opens on the lighter plan. Approving that one terminates the sessions; nothing restarts."""
    configure(tmp_path, orders_db, demo_app, idle=5, refresh=2)
    queue = f"pg-{uuid.uuid4().hex[:6]}"
    stale = sessions.open_idle(40)
    async with worker(dev_env, queue):
        handle = await start(dev_env, queue)
        first = await wait_for_gate(handle)
        assert first.plan.action == "restart_app"

        async def lighter() -> Any:
            gate = await handle.query(PoolRestartWorkflow.pending_gate)
            return gate if gate is not None and gate.plan.plan_id != first.plan.plan_id else None

        second = await eventually(lighter, 30)
        assert second.plan.action == "terminate_idle_sessions"
        assert second.gate == first.gate + 1
        planned = {s["pid"] for s in second.plan.parameters["sessions"]}
        assert set(stale) <= planned
        await handle.execute_update(PoolRestartWorkflow.approve, mint("bob", second, "approve"))
        report = await asyncio.wait_for(handle.result(), 60)
    assert report.status == RunStatus.REMEDIATED, report.summary
    outcomes = [(d.gate, d.outcome.value) for d in report.decisions]
    assert outcomes == [(first.gate, "superseded"), (second.gate, "approved")]
    superseded = next(s for s in report.steps if s.kind == "gate_superseded")
    assert "terminating them is lighter than a restart" in superseded.summary
    assert not [s for s in report.steps if "restart hook" in s.summary]
    assert sessions.alive(stale) == set()
