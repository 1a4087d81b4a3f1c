"""Plans whose world moved between approval and act (issue 13): the act step checks the plan's
precondition just before acting, refuses, and the run re-diagnoses; the new plan needs a new
decision. On the real components of test_key_rotation.py (dev server, Postgres, moto, the demo
app as the credential's consumer).

- pool_restart: approved, then kept waiting for the lease longer than `max_plan_age` while
  the pool recovers: diagnosed again before acting, nothing is done.
- backup_restore: while the gate waits, writes are turned back on and a row written; the
  approved switch refuses, the run enters read-only again, snapshots again and asks again.
- key_rotation: while the gate waits, a person rotates the secret by hand (a new AWSCURRENT
  version with a new password on the role). The approved plan (made from the old version) is
  not acted on; the run plans again from the new version, and only a second approval rotates.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from psycopg import sql
from temporalio.testing import WorkflowEnvironment

from activities.postgres.logins import scram_verifier
from activities.safety import LeaseRelease, safety_workflow_id
from infra.local_postgres import PostgresServer
from tests.fake_system import CONFIG, FakeSystem, running, status_is
from tests.support import eventually, mint, start_signed, wait_for_gate, write_config
from tests.test_backup_restore import aws as aws
from tests.test_backup_restore import configure, corrupt, create_shop, fingerprint, take_backup
from tests.test_backup_restore import start as start_restore
from tests.test_envelope_holds import hold
from tests.test_key_rotation import (
    USERS,
    health,
    single_user_with_a_healthy_app,
    start,
)
from workers.worker import build_worker
from workflows.models import GateView, RunbookInput, RunStatus
from workflows.pool_restart import PoolRestartWorkflow
from workflows.runbook import RunbookWorkflow


async def next_gate(env: WorkflowEnvironment, workflow_id: str, after: str = "") -> GateView:
    handle = env.client.get_workflow_handle(workflow_id)

    async def probe() -> GateView | None:
        gate = await handle.query(RunbookWorkflow.pending_gate)
        return gate if gate is not None and gate.plan.plan_id != after else None

    return await eventually(probe, 60)


async def test_a_rotation_approved_before_someone_rotated_by_hand_is_planned_again(
    dev_env: WorkflowEnvironment, postgres: PostgresServer, app_factory: Any, tmp_path: Path
) -> None:
    login, app = single_user_with_a_healthy_app(postgres, app_factory, tmp_path)
    token, queue = uuid.uuid4().hex, f"krd-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start(dev_env, queue, "app-db-credentials", f"krd-{token[:6]}", token=token)
        first = await next_gate(dev_env, handle.id)
        planned_from = first.plan.parameters["from_version"]
        # Meanwhile a person rotates by hand: a new password on the role, then the secret.
        by_hand = secrets.token_urlsafe(24)
        with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(USERS[0]), sql.Literal(scram_verifier(by_hand))
                )
            )
        moved = boto3.client("secretsmanager").put_secret_value(
            SecretId=login.arn, SecretString=json.dumps({**login.secret(), "password": by_hand})
        )["VersionId"]
        await handle.execute_update(RunbookWorkflow.approve, mint("bob", first, "approve"))
        second = await next_gate(dev_env, handle.id, after=first.plan.plan_id)
        assert token not in login.versions(), "the approved plan was not acted on"
        assert login.secret()["password"] == by_hand
        assert second.plan.parameters["from_version"] == moved != planned_from
        await handle.execute_update(RunbookWorkflow.approve, mint("carol", second, "approve"))
        report = await asyncio.wait_for(handle.result(), 120)
    assert report.status == RunStatus.REMEDIATED, report.summary
    drift = [s.summary for s in report.steps if s.kind == "plan_drift"]
    assert len(drift) == 1 and f"not {planned_from} that the approved plan" in drift[0]
    approved = [d.plan_id for d in report.decisions if d.outcome == "approved"]
    assert approved == [first.plan.plan_id, second.plan.plan_id]
    assert login.versions()[token] == ["AWSCURRENT"]
    assert login.versions()[moved] == ["AWSPREVIOUS"]
    assert health(app) == 200


async def test_a_plan_approved_long_before_it_can_act_is_diagnosed_again_first(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Approved, then kept waiting for the target's lease (another run holds it) longer than
    `max_plan_age`; meanwhile the pool recovered. Before acting the run looks again: the plan
    is superseded, the new diagnosis finds nothing to do, and no session is terminated."""
    write_config(tmp_path, CONFIG.format(auto="max_plan_age = 2"))
    system = FakeSystem()
    system.verifying_allowed.set()
    async with running(dev_env, system) as queue:
        assert (await hold(dev_env, queue, "orders-db", "another-run")).granted
        handle = await start_signed(
            dev_env.client,
            PoolRestartWorkflow.run,
            RunbookInput(target="orders-db", requested_by="alice"),
            id=f"stale-{uuid.uuid4().hex[:6]}",
            task_queue=queue,
        )
        gate = await wait_for_gate(handle)
        await handle.execute_update(PoolRestartWorkflow.approve, mint("bob", gate, "approve"))
        await eventually(lambda: status_is(handle, RunStatus.WAITING), 30)
        system.total = 20  # the pool recovered while the run waited
        await asyncio.sleep(2.5)
        envelope = dev_env.client.get_workflow_handle(safety_workflow_id(queue))
        await envelope.execute_update(
            "release", LeaseRelease(target="orders-db", holder="another-run")
        )
        report = await asyncio.wait_for(handle.result(), 60)
    assert report.status == RunStatus.NO_ACTION_NEEDED, report.summary
    assert system.terminated == []
    stale = next(s for s in report.steps if s.kind == "approved_plan_stale")
    assert "below the threshold: no action" in stale.summary
    assert [d.outcome.value for d in report.decisions] == ["approved"]


async def test_a_restore_whose_database_took_writes_after_its_snapshot_is_planned_again(
    dev_env: WorkflowEnvironment, postgres: PostgresServer, aws: str, tmp_path: Path
) -> None:
    """While the restore's gate waits, someone turns writes back on and writes: the safety
    snapshot no longer holds what the switch would discard. The approved switch refuses, the
    run enters read-only again (its own gate), takes a new snapshot and asks again; only the
    second approval switches."""
    shop = create_shop(postgres, "shopd", events=100)
    configure(tmp_path, shop, aws)
    await take_backup("nightly-d")
    with shop.connect() as conn:
        good = fingerprint(conn)
    await asyncio.sleep(1.1)
    corrupted_at = datetime.now(UTC)
    corrupt(shop)
    queue = f"brd-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start_restore(dev_env, queue, before=corrupted_at.isoformat())
        await approve_at(dev_env, f"{handle.id}-read-only-enter", "bob")
        first = await approve_at(dev_env, handle.id, "", approve=False)
        with shop.connect("postgres") as conn:  # a person turns writes back on, and writes
            conn.execute("ALTER DATABASE shopd RESET default_transaction_read_only")
        with shop.connect() as conn:
            conn.execute("INSERT INTO events (kind) VALUES ('written after the snapshot')")
        await handle.execute_update(RunbookWorkflow.approve, mint("carol", first, "approve"))
        await approve_at(dev_env, f"{handle.id}-read-only-enter-1", "bob")
        second = await approve_at(dev_env, handle.id, "carol", after=first.plan.plan_id)
        await approve_at(dev_env, f"{handle.id}-read-only-exit-1", "bob")
        report = await asyncio.wait_for(handle.result(), 180)
    assert report.status == RunStatus.REMEDIATED, report.summary
    drift = [s.summary for s in report.steps if s.kind == "plan_drift"]
    assert len(drift) == 1 and "accepts writes again since its safety snapshot" in drift[0]
    approved = [d.plan_id for d in report.decisions if d.outcome == "approved"]
    assert approved == [first.plan.plan_id, second.plan.plan_id]
    assert first.plan.parameters["safety_snapshot"] != second.plan.parameters["safety_snapshot"]
    with shop.connect() as conn:
        assert fingerprint(conn) == good


async def approve_at(
    env: WorkflowEnvironment, workflow_id: str, who: str, after: str = "", approve: bool = True
) -> GateView:
    """Wait for the gate of `workflow_id` (another plan than `after`), approve it as `who`."""

    async def probe() -> GateView | None:
        try:
            gate = await env.client.get_workflow_handle(workflow_id).query(
                RunbookWorkflow.pending_gate
            )
        except Exception:
            return None
        return gate if gate is not None and gate.plan.plan_id != after else None

    gate: GateView = await eventually(probe, 120)
    if approve:
        await env.client.get_workflow_handle(workflow_id).execute_update(
            RunbookWorkflow.approve, mint(who, gate, "approve")
        )
    return gate


async def test_a_refresh_due_with_the_reminder_still_looks_again(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """refresh_after equal to remind_after: at that moment the gate pages again AND diagnoses
    again (the reminder used to take the refresh's turn, so the first look came a whole period
    late). The pool recovered meanwhile: the plan is superseded at the first tick."""
    write_config(tmp_path, CONFIG.format(auto="refresh_after = 600"))
    system = FakeSystem()
    async with running(time_skipping_env, system) as queue:
        handle = await start_signed(
            time_skipping_env.client,
            PoolRestartWorkflow.run,
            RunbookInput(target="orders-db", requested_by="alice"),
            id=f"tick-{uuid.uuid4().hex[:6]}",
            task_queue=queue,
            now=await time_skipping_env.get_current_time(),
        )
        await wait_for_gate(handle)
        system.total = 20
        report = await handle.result()
    assert report.status == RunStatus.NO_ACTION_NEEDED, report.summary
    opened = next(s.at for s in report.steps if s.kind == "gate_opened")
    reminded = next(s.at for s in report.steps if s.kind == "gate_reminder")
    superseded = next(d for d in report.decisions if d.outcome == "superseded")
    assert (reminded - opened).total_seconds() == pytest.approx(600, abs=5)
    assert (superseded.decided_at - opened).total_seconds() == pytest.approx(600, abs=5)
