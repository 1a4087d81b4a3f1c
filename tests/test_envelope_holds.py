"""The safety envelope holds for the whole action (issue 13, scenario 5), on the dev server:

- a lease is renewed while its run acts, so a step longer than the TTL keeps the target;
- a rotation leases the consumers it restarts: another run holding one makes it wait;
- the kill switch stops an approved restore before it switches the restored database in
  (live database untouched, restored copy kept, writes still off, paged), and a rotation
  before it restarts the consumers (the switch undone, the old login current and working).

The pause is pulled at an exact step boundary by a worker interceptor that runs the signed
pause right after a given activity completes, as a lead would at that moment.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    Worker,
)

from activities.safety import (
    LeaseRelease,
    LeaseRequest,
    LeaseResult,
    SafetyQuery,
    SafetyStatus,
    safety_workflow_id,
)
from infra.local_postgres import PostgresServer
from tests.fake_system import CONFIG, FakeSystem, envelope, running, status_is
from tests.support import eventually, mint, start_signed, wait_for_gate, write_config
from tests.test_backup_restore import (
    approve_gates,
    configure,
    corrupt,
    create_shop,
    fingerprint,
    take_backup,
)
from tests.test_backup_restore import aws as aws
from tests.test_backup_restore import start as start_restore
from tests.test_key_rotation import (
    APP_TARGET,
    PG_CREDENTIAL,
    USERS,
    health,
    make_login,
    single_user_with_a_healthy_app,
)
from tests.test_key_rotation import approve as approve_rotation
from tests.test_key_rotation import start as start_rotation
from workers.worker import WORKFLOW_RUNNER, WORKFLOWS, activities_for
from workflows.key_rotation import KeyRotationWorkflow
from workflows.models import RunbookInput, RunReport, RunStatus
from workflows.pool_restart import PoolRestartWorkflow


class PauseAfter(Interceptor):
    """Runs `pause` once, right after the first completion of activity `name`."""

    def __init__(self, name: str, pause: Callable[[], Awaitable[object]]) -> None:
        self.name, self.pause, self.done = name, pause, False

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        outer = self

        class Inbound(ActivityInboundInterceptor):
            async def execute_activity(self, input: ExecuteActivityInput) -> Any:
                result = await super().execute_activity(input)
                if activity.info().activity_type == outer.name and not outer.done:
                    outer.done = True
                    await outer.pause()
                return result

        return Inbound(next)


def worker(env: WorkflowEnvironment, queue: str, *interceptors: Interceptor) -> Worker:
    return Worker(
        env.client,
        task_queue=queue,
        workflows=WORKFLOWS,
        activities=activities_for(env.client),
        workflow_runner=WORKFLOW_RUNNER,
        interceptors=list(interceptors),
    )


async def hold(env: WorkflowEnvironment, queue: str, target: str, holder: str) -> LeaseResult:
    """Another run's lease on `target`, taken through the envelope as runs take theirs."""
    handle = await env.client.start_workflow(
        "SafetyEnvelopeWorkflow",
        id=safety_workflow_id(queue),
        task_queue=queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    request = LeaseRequest(target=target, runbook="rollback", holder=holder, plan_id="other")
    result: LeaseResult = await handle.execute_update("acquire", request, result_type=LeaseResult)
    return result


async def holder_of(env: WorkflowEnvironment, queue: str, target: str) -> str | None:
    handle = env.client.get_workflow_handle(safety_workflow_id(queue))
    status: SafetyStatus = await handle.query(
        "status", SafetyQuery(target=target, runbook="pool_restart"), result_type=SafetyStatus
    )
    return status.holder


async def test_a_lease_is_renewed_while_its_run_acts_longer_than_the_ttl(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    write_config(tmp_path, CONFIG.format(auto="") + "\n[safety]\nlease_ttl_seconds = 3\n")
    system = FakeSystem()  # verification blocks until allowed: a step that outlasts the TTL
    async with running(dev_env, system) as queue:
        first = await start_signed(
            dev_env.client,
            PoolRestartWorkflow.run,
            RunbookInput(target="orders-db", requested_by="alice"),
            id=f"lease-first-{uuid.uuid4().hex[:6]}",
            task_queue=queue,
        )
        gate = await wait_for_gate(first)
        await first.execute_update(PoolRestartWorkflow.approve, mint("bob", gate, "approve"))
        await eventually(lambda: status_is(first, RunStatus.VERIFYING), 30)
        await asyncio.sleep(8)  # more than two TTLs into the step
        assert await holder_of(dev_env, queue, "orders-db") == first.id
        assert (await hold(dev_env, queue, "orders-db", "another-run")).granted is False
        system.verifying_allowed.set()
        report = await asyncio.wait_for(first.result(), 60)
        assert await holder_of(dev_env, queue, "orders-db") is None, "released at the end"
    assert report.status == RunStatus.REMEDIATED, report.summary
    assert [s for s in report.steps if s.kind.startswith("safety_")] == []


async def test_a_rotation_leases_the_consumers_it_restarts(
    dev_env: WorkflowEnvironment, postgres: PostgresServer, app_factory: Any, tmp_path: Path
) -> None:
    login, app = single_user_with_a_healthy_app(postgres, app_factory, tmp_path)
    token, queue = uuid.uuid4().hex, f"krl-{uuid.uuid4().hex[:6]}"
    async with worker(dev_env, queue):
        assert (await hold(dev_env, queue, "rot-api", "rollback-rot-api")).granted
        handle = await start_rotation(dev_env, queue, "app-db-credentials", f"krl-{token[:6]}",
                                      token=token)  # fmt: skip
        await approve_rotation(dev_env, handle.id, "bob")

        async def waiting() -> bool:
            report = await handle.query(KeyRotationWorkflow.report)
            return report.status == RunStatus.WAITING

        await eventually(waiting, 60)
        assert token not in login.versions(), "nothing issued while a consumer is held"
        envelope_handle = dev_env.client.get_workflow_handle(safety_workflow_id(queue))
        await envelope_handle.execute_update(
            "release", LeaseRelease(target="rot-api", holder="rollback-rot-api")
        )
        report = await asyncio.wait_for(handle.result(), 120)
    assert report.status == RunStatus.REMEDIATED, report.summary
    waits = [s.summary for s in report.steps if s.kind == "safety_wait"]
    assert waits == ["approved, not acting yet: rot-api is being remediated by rollback-rot-api "
                     "(rollback)"]  # fmt: skip
    assert health(app) == 200


async def test_a_pause_stops_a_rotation_before_the_consumers_restart_and_undoes_it(
    dev_env: WorkflowEnvironment, postgres: PostgresServer, app_factory: Any, tmp_path: Path
) -> None:
    login = make_login(postgres, "alternating_users")
    old = login.secret()
    app = app_factory(DEMO_DB_SECRET_ARN=login.arn)
    os.environ["ROT_ADMIN_DSN"] = postgres.dsn(login.database)
    write_config(
        tmp_path,
        APP_TARGET.format(app=app.url, deadline=30)
        + PG_CREDENTIAL.format(arn=login.arn, strategy="alternating_users", users=list(USERS)),
    )
    token, queue = uuid.uuid4().hex, f"krp-{uuid.uuid4().hex[:6]}"
    pause = PauseAfter("finish_rotation", lambda: envelope(dev_env, queue, "pause", "carol"))
    async with worker(dev_env, queue, pause):
        handle = await start_rotation(dev_env, queue, "app-db-credentials", f"krp-{token[:6]}",
                                      token=token)  # fmt: skip
        await approve_rotation(dev_env, handle.id, "bob")
        report: RunReport = await asyncio.wait_for(handle.result(), 120)
    assert pause.done
    assert report.status == RunStatus.STOPPED, report.summary
    assert "before restarting the consumers (remediations are paused by carol" in report.summary
    assert "Rotation undone" in report.summary
    assert "AWSCURRENT" not in login.versions()[token]
    assert login.secret() == old and login.logs_in(old), "the old login is current and works"
    assert not [s for s in report.steps if s.summary.startswith("restarted rot-api")]
    assert health(app) == 200


async def test_a_pause_stops_an_approved_restore_before_the_switch(
    dev_env: WorkflowEnvironment, postgres: PostgresServer, aws: str, tmp_path: Path
) -> None:
    shop = create_shop(postgres, "shopp", events=20000)
    configure(tmp_path, shop, aws)
    await take_backup("nightly-p")
    await asyncio.sleep(1.1)
    corrupted_at = datetime.now(UTC)
    corrupt(shop)
    with shop.connect() as conn:
        bad = fingerprint(conn)
    queue = f"brp-{uuid.uuid4().hex[:6]}"
    pause = PauseAfter("restore_to_scratch", lambda: envelope(dev_env, queue, "pause", "carol"))
    async with worker(dev_env, queue, pause):
        handle: WorkflowHandle[Any, RunReport] = await start_restore(
            dev_env, queue, before=corrupted_at.isoformat()
        )
        approvals = asyncio.create_task(approve_gates(dev_env, handle.id, ["bob", "carol", "bob"]))
        report = await asyncio.wait_for(handle.result(), 180)
        approvals.cancel()
    assert report.status == RunStatus.STOPPED, report.summary
    assert "before switching the restored database in" in report.summary
    assert "the restored copy is kept as shopp_restore_" in report.summary
    assert "STILL READ-ONLY" in report.summary and "--param phase=exit" in report.summary
    assert [s.kind for s in report.steps].count("kill_switch_stop") == 1
    with shop.connect("postgres") as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()]
    assert next(n for n in names if n.startswith("shopp_")).startswith("shopp_restore_")
    with shop.connect() as conn:
        assert fingerprint(conn) == bad, "the live database was not touched"
        try:
            conn.execute("INSERT INTO events (kind) VALUES ('write')")
            raise AssertionError("writes should still be off")
        except psycopg.errors.ReadOnlySqlTransaction:
            pass


class SlowBefore(Interceptor):
    """Delays activity `name` by `seconds` (the keys loading slowly, as on a busy worker)."""

    def __init__(self, name: str, seconds: float) -> None:
        self.name, self.seconds = name, seconds

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        outer = self

        class Inbound(ActivityInboundInterceptor):
            async def execute_activity(self, input: ExecuteActivityInput) -> Any:
                if activity.info().activity_type == outer.name:
                    await asyncio.sleep(outer.seconds)
                return await super().execute_activity(input)

        return Inbound(next)


async def test_a_pause_being_verified_holds_back_a_lease_asked_for_after_it(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Found by hand: a pause sent just before a run's lease request was still loading the
    keys to verify it when the lease was granted, and the run acted. A lease asked for while
    a pause is being verified now waits for it."""
    write_config(tmp_path, CONFIG.format(auto=""))
    queue = f"pf-{uuid.uuid4().hex[:6]}"
    async with worker(dev_env, queue, SlowBefore("safety_policy", 1.5)):
        envelope_handle = await dev_env.client.start_workflow(
            "SafetyEnvelopeWorkflow",
            id=safety_workflow_id(queue),
            task_queue=queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        pausing = asyncio.create_task(envelope(dev_env, queue, "pause", "carol"))
        await asyncio.sleep(0.5)
        request = LeaseRequest(target="orders-db", runbook="pool_restart", holder="r", plan_id="p")
        during = await envelope_handle.execute_update("acquire", request, result_type=LeaseResult)
        assert (await pausing).paused
        after = await envelope_handle.execute_update("acquire", request, result_type=LeaseResult)
    assert (during.granted, during.reason) == (False, "a pause is being recorded")
    assert (after.granted, after.reason) == (False, "paused by carol: incident review")
