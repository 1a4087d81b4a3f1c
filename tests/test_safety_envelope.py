"""The safety envelope on the time-skipping test server: kill switch, one destructive
remediation per target, cooldown and budget that turn auto-approval off."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.config import ConfigError, load_config
from tests.fake_system import AUTO, CONFIG, FakeSystem, Handle, envelope, running, status_is
from tests.support import eventually, mint, start_signed, wait_for_gate, write_config
from workflows.models import RunbookInput, RunStatus
from workflows.pool_restart import PoolRestartWorkflow


async def start(env: WorkflowEnvironment, queue: str, requested_by: str = "alice") -> Handle:
    return await start_signed(
        env.client,
        PoolRestartWorkflow.run,
        RunbookInput(target="orders-db", requested_by=requested_by),
        id=f"safety-run-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
        now=await env.get_current_time(),
    )


async def approve(handle: Handle) -> None:
    gate = await wait_for_gate(handle)
    await handle.execute_update(PoolRestartWorkflow.approve, mint("bob", gate, "approve"))


async def test_kill_switch_holds_approved_runs_until_resumed(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    write_config(tmp_path, CONFIG.format(auto=""))
    system = FakeSystem()
    system.verifying_allowed.set()
    async with running(time_skipping_env, system) as queue:
        paused = await envelope(time_skipping_env, queue, "pause", "carol")
        assert paused.paused and paused.paused_by == "carol"
        handle = await start(time_skipping_env, queue)
        await approve(handle)
        await eventually(lambda: status_is(handle, RunStatus.WAITING))
        assert system.terminated == []
        await envelope(time_skipping_env, queue, "resume", "bob")
        report = await handle.result()
    assert report.status == RunStatus.REMEDIATED
    waits = [s.summary for s in report.steps if s.kind == "safety_wait"]
    assert waits == ["approved, not acting yet: paused by carol: incident review"]


async def test_one_destructive_remediation_per_target(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    write_config(tmp_path, CONFIG.format(auto=""))
    system = FakeSystem()
    async with running(time_skipping_env, system) as queue:
        first, second = await start(time_skipping_env, queue), await start(time_skipping_env, queue)
        await approve(first)
        await eventually(lambda: status_is(first, RunStatus.VERIFYING))
        await approve(second)
        await eventually(lambda: status_is(second, RunStatus.WAITING))
        assert len(system.terminated) == 1  # the second waits while the first verifies
        system.verifying_allowed.set()
        assert (await first.result()).status == RunStatus.REMEDIATED
        report = await second.result()
    assert report.status == RunStatus.REMEDIATED
    assert len(system.terminated) == 2
    [wait] = [s.summary for s in report.steps if s.kind == "safety_wait"]
    assert f"being remediated by {first.id}" in wait


async def test_cooldown_turns_auto_approval_off_and_pages(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    write_config(tmp_path, CONFIG.format(auto=AUTO))
    system = FakeSystem()
    system.verifying_allowed.set()
    async with running(time_skipping_env, system) as queue:
        first = await (await start(time_skipping_env, queue, "alertmanager")).result()
        assert first.decisions[0].by_policy == "small-idle-cleanup"
        second = await start(time_skipping_env, queue, "alertmanager")
        gate = await wait_for_gate(second)  # the same plan would have passed unattended
        report = await second.query(PoolRestartWorkflow.report)
        declined = [s.summary for s in report.steps if s.kind == "auto_approval_declined"]
        assert declined and "in cooldown until" in declined[0]
        assert [n.severity for n in system.notes if n.event == "safety_limit"] == ["page"]
        await second.execute_update(PoolRestartWorkflow.approve, mint("bob", gate, "approve"))
        assert (await second.result()).status == RunStatus.REMEDIATED


async def test_limits_set_for_one_target_and_runbook_apply_to_it_alone(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """`[[safety.override]]` for pool_restart on orders-db: no unattended action at all there
    (budget 0), while the global limits stay as they are for everything else."""
    overrides = (
        '\n[[safety.override]]\ntarget = "orders-db"\nrunbook = "pool_restart"\n'
        'hourly_budget = 0\n\n[[safety.override]]\nrunbook = "rollback"\nhourly_budget = 9\n'
    )
    path = write_config(tmp_path, CONFIG.format(auto=AUTO) + overrides)
    config = load_config(path)
    assert config.safety.for_run("orders-db", "pool_restart").hourly_budget == 0
    assert config.safety.for_run("orders-db", "rollback").hourly_budget == 9
    assert config.safety.for_run("orders-db", "read_only").hourly_budget == 3
    system = FakeSystem()
    system.verifying_allowed.set()
    async with running(time_skipping_env, system) as queue:
        handle = await start(time_skipping_env, queue, "alertmanager")
        gate = await wait_for_gate(handle)  # the plan is within the policy, but not the budget
        report = await handle.query(PoolRestartWorkflow.report)
        declined = [s.summary for s in report.steps if s.kind == "auto_approval_declined"]
        assert declined == ["safety envelope: hourly budget used (0/0); a person must approve"]
        await handle.execute_update(PoolRestartWorkflow.approve, mint("bob", gate, "approve"))
        assert (await handle.result()).status == RunStatus.REMEDIATED


def test_a_limits_override_must_name_a_known_target_and_runbook(tmp_path: Path) -> None:
    for override, says in (
        ('target = "nope"\nhourly_budget = 1', "unknown target 'nope'"),
        ('runbook = "reboot"\nhourly_budget = 1', "unknown runbook 'reboot'"),
        ("hourly_budget = 1", "needs `target`, `runbook` or both"),
    ):
        path = write_config(
            tmp_path, CONFIG.format(auto="") + f"\n[[safety.override]]\n{override}\n"
        )
        with pytest.raises(ConfigError, match=re.escape(says)):
            load_config(path)


async def test_a_cooldown_ends_when_its_time_has_passed_even_if_the_envelope_was_idle(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The envelope answers status queries from its last workflow task; judged at that task's
    time, a cooldown long over still looked active until something else woke the envelope.
    Status is now judged at the asker's time."""
    write_config(tmp_path, CONFIG.format(auto=AUTO) + "\n[safety]\ncooldown_seconds = 2\n")
    system = FakeSystem()
    system.verifying_allowed.set()
    async with running(dev_env, system) as queue:
        first = await (await start(dev_env, queue, "alertmanager")).result()
        assert first.decisions[0].by_policy == "small-idle-cleanup"
        await asyncio.sleep(3)  # the cooldown is over; nothing has touched the envelope since
        # Judged at the stale time, it would wait at a gate for a person instead.
        second = await asyncio.wait_for((await start(dev_env, queue, "alertmanager")).result(), 30)
    assert second.decisions[0].by_policy == "small-idle-cleanup", second.summary
    assert not [s for s in second.steps if s.kind == "auto_approval_declined"]
