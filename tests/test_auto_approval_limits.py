"""Limits no policy lifts silently (issue: never act on a stale plan, scenario 4): a plan that
cannot be undone, or that replaces its target as a whole, passes unattended only under a
policy that names its action and allows that kind explicitly. Time-skipping server, the real
gate and envelope, fake target activities."""

from __future__ import annotations

from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from tests.fake_system import AUTO, CONFIG, FakeSystem, running
from tests.support import mint, start_signed, wait_for_gate, write_config
from workflows.models import RunbookInput, RunStatus
from workflows.pool_restart import PoolRestartWorkflow


async def run_with(env: WorkflowEnvironment, tmp_path: Path, policy: str) -> FakeSystem:
    write_config(tmp_path, CONFIG.format(auto=policy))
    system = FakeSystem()
    system.verifying_allowed.set()
    async with running(env, system) as queue:
        handle = await start_signed(
            env.client,
            PoolRestartWorkflow.run,
            RunbookInput(target="orders-db", requested_by="alice"),
            id=f"limits-{queue}",
            task_queue=queue,
            now=await env.get_current_time(),
        )
        report = await handle.query(PoolRestartWorkflow.report)
        if "allow_irreversible" not in policy:
            gate = await wait_for_gate(handle)
            report = await handle.query(PoolRestartWorkflow.report)
            declined = [s.summary for s in report.steps if s.kind == "auto_approval_declined"]
            assert declined and "cannot be undone" in declined[0]
            assert "allow_irreversible = true" in declined[0]
            assert system.terminated == []
            await handle.execute_update(PoolRestartWorkflow.approve, mint("bob", gate, "approve"))
        report = await handle.result()
    assert report.status == RunStatus.REMEDIATED
    return system


async def test_an_irreversible_plan_needs_a_policy_that_allows_it(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    # Ending sessions cannot be undone: the same policy without allow_irreversible asks a lead.
    without = AUTO.replace("allow_irreversible = true\n", "")
    system = await run_with(time_skipping_env, tmp_path, without)
    assert system.terminated == [system.idle_pids]  # after bob's approval


async def test_the_policy_that_allows_it_passes_it_unattended(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    system = await run_with(time_skipping_env, tmp_path, AUTO)
    assert system.terminated == [system.idle_pids]
