"""A cancelled run stops, says what state it left, pages, and lets its target go (issue:
never act on a stale plan, scenario 7: pool_restart and rollback had no cancel path, the
lease stayed held until its TTL and nobody was paged). A dev server (a cancelled activity
that does not heartbeat would stall the time-skipping server's clock for later tests), the
real gate and envelope, fake target activities."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from activities.config import SafetyLimits
from activities.safety import SafetyQuery, SafetyStatus, safety_workflow_id
from tests.fake_system import CONFIG, FakeSystem, running, status_is
from tests.support import eventually, mint, start_signed, wait_for_gate, write_config
from workflows.models import RunbookInput, RunStatus
from workflows.pool_restart import PoolRestartWorkflow


async def test_a_cancelled_pool_restart_releases_its_lease_and_pages(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    write_config(tmp_path, CONFIG.format(auto=""))
    system = FakeSystem()  # verification blocks: the run is cancelled while it holds the lease
    async with running(dev_env, system) as queue:
        handle = await start_signed(
            dev_env.client,
            PoolRestartWorkflow.run,
            RunbookInput(target="orders-db", requested_by="alice"),
            id=f"cancel-{queue}",
            task_queue=queue,
            now=await dev_env.get_current_time(),
        )
        gate = await wait_for_gate(handle)
        await handle.execute_update(PoolRestartWorkflow.approve, mint("bob", gate, "approve"))
        await eventually(lambda: status_is(handle, RunStatus.VERIFYING))
        envelope = dev_env.client.get_workflow_handle(safety_workflow_id(queue))
        query = SafetyQuery(target="orders-db", runbook="pool_restart", limits=SafetyLimits())
        held = await envelope.query("status", query, result_type=SafetyStatus)
        assert held.holder == handle.id

        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        system.verifying_allowed.set()  # the fake verification does not heartbeat: let it end
        report = await handle.query(PoolRestartWorkflow.report)
        released = await envelope.query("status", query, result_type=SafetyStatus)
    assert report.status == RunStatus.CANCELLED
    assert "cancelled while Verifying" in report.summary
    assert released.holder is None  # not held until the lease's TTL
    pages = [n for n in system.notes if n.event == "pool_restart_cancelled"]
    assert len(pages) == 1 and pages[0].severity == "page"
    assert system.terminated == [system.idle_pids]  # what was done stays done
