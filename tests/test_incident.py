"""A run acts only while its incident is live (issue: never act on a stale plan, scenario 3).

The run knows the alerts it serves by fingerprint. Their resolution stops it before anything
is approved (auto-approval included) and between approval and the act step; another alert's
resolution routed to the same runbook and target changes nothing; a re-fire reopens the
question. Time-skipping server, the real gate and envelope, fake target activities."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.fake_system import AUTO, CONFIG, START, FakeSystem, Handle, envelope, running, status_is
from tests.support import eventually, mint, start_signed, wait_for_gate, write_config
from workflows.models import AlertContext, AlertSignal, RunbookInput, RunStatus
from workflows.pool_restart import PoolRestartWorkflow

ALERT = AlertContext(source="alertmanager", name="PgTooManyConnections", fingerprint="f1")
OTHER = AlertContext(source="alertmanager", name="SiteDown", fingerprint="f2")


@pytest.fixture
async def queue(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path, system: FakeSystem
) -> AsyncIterator[str]:
    write_config(tmp_path, CONFIG.format(auto=AUTO))
    async with running(time_skipping_env, system) as name:
        yield name


@pytest.fixture
def system() -> FakeSystem:
    fake = FakeSystem()
    fake.verifying_allowed.set()
    return fake


async def start_from_alert(env: WorkflowEnvironment, queue: str) -> Handle:
    """As the intake starts it: signed, with the alert as its first signal."""
    return await start_signed(
        env.client,
        PoolRestartWorkflow.run,
        RunbookInput(
            target="orders-db",
            requested_by="alert:alertmanager",
            alert=ALERT,
            close_gate_on_resolve=True,
        ),
        id=f"incident-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
        now=await env.get_current_time(),
        start_signal="alert_received",
        start_signal_args=[AlertSignal(status="firing", alert=ALERT, received_at=START)],
    )


async def deliver(
    handle: Handle, alert: AlertContext, status: Literal["firing", "resolved"]
) -> None:
    await handle.signal(
        PoolRestartWorkflow.alert_received,
        AlertSignal(status=status, alert=alert, received_at=START),
    )


def kinds(handle_report: object) -> list[str]:
    return [s.kind for s in handle_report.steps]  # type: ignore[attr-defined]


async def test_an_alert_resolved_before_the_plan_stops_auto_approval(
    time_skipping_env: WorkflowEnvironment, queue: str, system: FakeSystem
) -> None:
    system.planning_allowed.clear()  # the alert resolves while the run is still planning
    handle = await start_from_alert(time_skipping_env, queue)
    await deliver(handle, ALERT, "resolved")
    system.planning_allowed.set()
    report = await handle.result()
    assert report.status == RunStatus.RESOLVED, report.summary
    assert system.terminated == []
    assert "gate_approved" not in kinds(report) and "gate_resolved" in kinds(report)


async def test_another_alerts_resolution_changes_nothing(
    time_skipping_env: WorkflowEnvironment, queue: str, system: FakeSystem
) -> None:
    system.idle_pids = system.idle_pids + list(range(2000, 2020))  # beyond the policy: a person
    handle = await start_from_alert(time_skipping_env, queue)
    gate = await wait_for_gate(handle)
    await deliver(handle, OTHER, "resolved")
    assert await handle.query(PoolRestartWorkflow.pending_gate) is not None
    await handle.execute_update(PoolRestartWorkflow.approve, mint("bob", gate, "approve"))
    report = await handle.result()
    assert report.status == RunStatus.REMEDIATED
    assert "alert_resolved_elsewhere" in kinds(report)
    assert system.terminated == [system.idle_pids]


async def test_a_refire_reopens_the_question(
    time_skipping_env: WorkflowEnvironment, queue: str, system: FakeSystem
) -> None:
    system.planning_allowed.clear()
    handle = await start_from_alert(time_skipping_env, queue)
    await deliver(handle, ALERT, "resolved")
    await deliver(handle, ALERT, "firing")  # back before the gate decided anything
    system.planning_allowed.set()
    report = await handle.result()
    assert report.status == RunStatus.REMEDIATED  # within the policy: acted on the live alert
    assert "alert_refired" in kinds(report)
    assert system.terminated == [system.idle_pids]


async def test_an_approved_plan_is_not_acted_on_once_the_incident_resolved(
    time_skipping_env: WorkflowEnvironment, queue: str, system: FakeSystem
) -> None:
    system.idle_pids = system.idle_pids + list(range(2000, 2020))
    await envelope(time_skipping_env, queue, "pause", "carol")  # approved runs wait to act
    handle = await start_from_alert(time_skipping_env, queue)
    gate = await wait_for_gate(handle)
    await handle.execute_update(PoolRestartWorkflow.approve, mint("bob", gate, "approve"))
    await eventually(lambda: status_is(handle, RunStatus.WAITING))
    await deliver(handle, ALERT, "resolved")
    await envelope(time_skipping_env, queue, "resume", "bob")
    report = await handle.result()
    assert report.status == RunStatus.RESOLVED, report.summary
    assert "approved_plan_dropped" in kinds(report)
    assert system.terminated == []
