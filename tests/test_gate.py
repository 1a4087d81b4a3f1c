"""The approval gate, on the time-skipping test server.

The database, probe and notification activities are fakes registered under the real names;
the target registry and decision authentication are the real activities over a real config.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import decision_tokens
from activities.approval_auth import DecisionKind, DecisionRequest
from tests.fake_system import AUTO, CONFIG, START, FakeSystem
from tests.support import (
    eventually,
    mint,
    session_keys,
    start_signed,
    wait_for_gate,
    write_config,
)
from workers.worker import WORKFLOW_RUNNER
from workflows.models import (
    AlertContext,
    AlertSignal,
    DecisionOutcome,
    ExpectedImpact,
    GateView,
    Plan,
    RunbookInput,
    RunReport,
    RunStatus,
)
from workflows.pool_restart import PoolRestartWorkflow, terminate_effect
from workflows.safety_envelope import SafetyEnvelopeWorkflow


@pytest.fixture
async def system(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> AsyncIterator[FakeSystem]:
    write_config(tmp_path, CONFIG.format(auto=""))
    fake = FakeSystem()
    fake.planning_allowed.set()
    fake.verifying_allowed.set()
    async with Worker(
        time_skipping_env.client,
        workflow_runner=WORKFLOW_RUNNER,
        task_queue="gate-tests",
        workflows=[PoolRestartWorkflow, SafetyEnvelopeWorkflow],
        # Each test has its own worker on this queue; without a workflow cache no run is
        # sticky to a worker of an earlier test (the test server would not fall back).
        max_cached_workflows=0,
        activities=fake.activities(time_skipping_env.client),  # type: ignore[arg-type]
    ):
        yield fake


Handle = WorkflowHandle[PoolRestartWorkflow, RunReport]


async def start(
    env: WorkflowEnvironment, requested_by: str = "alice", dry_run: bool = False
) -> Handle:
    return await start_signed(
        env.client,
        PoolRestartWorkflow.run,
        RunbookInput(target="orders-db", requested_by=requested_by, dry_run=dry_run),
        now=await env.get_current_time(),
        id=f"gate-test-{uuid.uuid4().hex[:8]}",
        task_queue="gate-tests",
    )


def kinds(report: RunReport) -> list[str]:
    return [step.kind for step in report.steps]


async def test_lead_approval_runs_the_exact_plan(
    time_skipping_env: WorkflowEnvironment, system: FakeSystem
) -> None:
    handle = await start(time_skipping_env)
    gate = await wait_for_gate(handle)
    assert gate.required_group == "engineering-leads"
    assert gate.plan.expected_impact.affected == 30

    decision = await handle.execute_update(
        PoolRestartWorkflow.approve, mint("bob", gate, "approve", "ok")
    )
    assert decision.outcome == DecisionOutcome.APPROVED and decision.decided_by == "bob"
    report = await handle.result()
    assert report.status == RunStatus.REMEDIATED
    assert system.terminated == [system.idle_pids]
    assert [
        k
        for k in kinds(report)
        if k in {"gate_opened", "gate_approved", "action"} or k.startswith("verification")
    ] == ["gate_opened", "gate_approved", "action", "verification_passed"]


async def test_rejection_acts_on_nothing(
    time_skipping_env: WorkflowEnvironment, system: FakeSystem
) -> None:
    handle = await start(time_skipping_env)
    gate = await wait_for_gate(handle)
    await handle.execute_update(PoolRestartWorkflow.reject, mint("carol", gate, "reject", "no"))
    report = await handle.result()
    assert report.status == RunStatus.REJECTED
    assert system.terminated == [] and system.restarts == []


async def test_timeout_reminds_then_aborts_safely(
    time_skipping_env: WorkflowEnvironment, system: FakeSystem
) -> None:
    handle = await start(time_skipping_env)
    await wait_for_gate(handle)
    report = await handle.result()  # the test server skips the 30 minutes
    assert report.status == RunStatus.ABORTED
    assert system.terminated == []
    # gate_decided updates the gate's own message (Slack) in place; gate_timed_out pages.
    events = ["gate_opened", "gate_reminder", "gate_decided", "gate_timed_out"]
    assert [n.event for n in system.notes] == events
    assert [n.severity for n in system.notes][1:] == ["page", "info", "page"]
    at = {s.kind: s.at for s in report.steps}
    assert timedelta(minutes=10) <= at["gate_reminder"] - at["gate_opened"] < timedelta(minutes=11)
    waited = at["gate_timed_out"] - at["gate_opened"]
    assert timedelta(minutes=30) <= waited < timedelta(minutes=30, seconds=1)


async def test_a_notification_outage_does_not_stop_the_gate(
    time_skipping_env: WorkflowEnvironment, system: FakeSystem
) -> None:
    system.notify_fails = True
    handle = await start(time_skipping_env)
    await wait_for_gate(handle)
    report = await handle.result()
    assert report.status == RunStatus.ABORTED and system.terminated == []
    failed = [s for s in report.steps if s.kind == "notification_failed"]
    assert len(failed) == 4 and "webhook answered 503" in failed[0].summary


async def test_requester_cannot_approve_their_own_run(
    time_skipping_env: WorkflowEnvironment, system: FakeSystem
) -> None:
    handle = await start(time_skipping_env, requested_by="bob")
    gate = await wait_for_gate(handle)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(PoolRestartWorkflow.approve, mint("bob", gate, "approve"))
    assert "requested this run" in str(refused.value.cause)
    await handle.execute_update(PoolRestartWorkflow.approve, mint("carol", gate, "approve"))
    report = await handle.result()
    refusal = next(s for s in report.steps if s.kind == "decision_refused")
    assert refusal.actor == "bob"
    assert report.decisions[0].decided_by == "carol"


async def test_approver_outside_the_required_group_is_refused(
    time_skipping_env: WorkflowEnvironment, system: FakeSystem
) -> None:
    handle = await start(time_skipping_env, requested_by="carol")
    gate = await wait_for_gate(handle)
    for who in ("alice", "mallory"):
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(PoolRestartWorkflow.approve, mint(who, gate, "approve"))
        assert "not in the required group engineering-leads" in str(refused.value.cause)
    assert await handle.query(PoolRestartWorkflow.pending_gate) is not None
    await handle.execute_update(PoolRestartWorkflow.reject, mint("bob", gate, "reject"))
    report = await handle.result()
    assert [s.actor for s in report.steps if s.kind == "decision_refused"] == ["alice", "mallory"]
    assert system.terminated == []


async def test_forged_decisions_are_refused_before_they_reach_the_run(
    time_skipping_env: WorkflowEnvironment, system: FakeSystem
) -> None:
    handle = await start(time_skipping_env)
    gate = await wait_for_gate(handle)
    unsigned = DecisionRequest(plan_id=gate.plan.plan_id, approver="bob")
    wrong_key = mint("bob", gate, "approve", key=decision_tokens.new_private_key_text())
    # A genuine rejection re-labelled as an approval is a forgery too.
    relabelled = mint("bob", gate, "reject")
    # A genuine approval for another run cannot be replayed here.
    other_run = mint("bob", gate, "approve", workflow_id="some-other-workflow")
    for forged in (unsigned, wrong_key, relabelled, other_run):
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(PoolRestartWorkflow.approve, forged)
        assert "decision refused" in str(refused.value.cause)
    # Refused in the validator: none of them is in the run's history.
    history = await handle.fetch_history()
    assert not [
        e
        for e in history.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    report = await handle.query(PoolRestartWorkflow.report)
    assert report.status == RunStatus.AWAITING_APPROVAL
    await handle.execute_update(PoolRestartWorkflow.reject, mint("carol", gate, "reject"))
    await handle.result()
    assert system.terminated == []


async def test_decision_for_another_plan_is_refused(
    time_skipping_env: WorkflowEnvironment, system: FakeSystem
) -> None:
    handle = await start(time_skipping_env)
    gate = await wait_for_gate(handle)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(
            PoolRestartWorkflow.approve, mint("bob", gate, "approve", plan_id="0123456789abcdef")
        )
    assert "is not the open plan" in str(refused.value.cause)
    await handle.execute_update(PoolRestartWorkflow.reject, mint("bob", gate, "reject"))
    assert (await handle.result()).status == RunStatus.REJECTED


async def test_duplicate_and_late_conflicting_decisions(
    time_skipping_env: WorkflowEnvironment, system: FakeSystem
) -> None:
    system.planning_allowed.clear()
    system.verifying_allowed.clear()  # keep the run alive for the late decisions
    handle = await start(time_skipping_env)
    gate_plan = await _blocked_plan(system, handle)
    first = early("bob", handle, "approve", gate_plan, await time_skipping_env.get_current_time())
    system.planning_allowed.set()
    await wait_for_gate(handle)
    decided = await handle.execute_update(PoolRestartWorkflow.approve, first)
    again = await handle.execute_update(
        PoolRestartWorkflow.approve,
        early("bob", handle, "approve", gate_plan, await time_skipping_env.get_current_time()),
    )
    assert again == decided
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(
            PoolRestartWorkflow.reject,
            early("carol", handle, "reject", gate_plan, await time_skipping_env.get_current_time()),
        )
    assert "already approved by bob" in str(refused.value.cause)
    system.verifying_allowed.set()
    report = await handle.result()
    assert system.terminated == [system.idle_pids]
    assert "decision_duplicate" in kinds(report)


async def test_decision_sent_before_the_gate_opens_applies_to_that_plan(
    time_skipping_env: WorkflowEnvironment, system: FakeSystem
) -> None:
    system.planning_allowed.clear()
    handle = await start(time_skipping_env)
    plan_id = await _blocked_plan(system, handle)
    held = asyncio.create_task(
        handle.execute_update(
            PoolRestartWorkflow.approve,
            early("carol", handle, "approve", plan_id, await time_skipping_env.get_current_time()),
        )
    )
    await asyncio.sleep(1)
    assert not held.done()  # held, not lost and not applied to nothing
    system.planning_allowed.set()
    decision = await held
    assert decision.plan_id == plan_id and decision.decided_by == "carol"
    report = await handle.result()
    assert report.status == RunStatus.REMEDIATED
    assert system.terminated == [system.idle_pids]


async def test_dry_run_records_what_it_would_do_and_acts_on_nothing(
    time_skipping_env: WorkflowEnvironment, system: FakeSystem
) -> None:
    handle = await start(time_skipping_env, dry_run=True)
    report = await handle.result()
    assert report.status == RunStatus.DRY_RUN
    assert report.decisions[0].outcome == DecisionOutcome.DRY_RUN
    assert "would terminate_idle_sessions" in report.summary
    assert system.terminated == [] and system.restarts == []


async def test_unknown_target_aborts_with_a_clear_message(
    time_skipping_env: WorkflowEnvironment, system: FakeSystem
) -> None:
    handle = await start_signed(
        time_skipping_env.client,
        PoolRestartWorkflow.run,
        RunbookInput(target="ordes-db", requested_by="alice"),
        now=await time_skipping_env.get_current_time(),
        id=f"gate-test-{uuid.uuid4().hex[:8]}",
        task_queue="gate-tests",
    )
    report = await handle.result()
    assert report.status == RunStatus.ABORTED
    assert "unknown target 'ordes-db'" in report.summary and "orders-db" in report.summary
    assert system.notes == [] and system.terminated == []


async def test_resolved_alert_closes_a_waiting_gate_and_duplicates_attach(
    time_skipping_env: WorkflowEnvironment, system: FakeSystem
) -> None:
    alert = AlertContext(source="alertmanager", name="PgTooManyConnections", fingerprint="f1")
    handle = await start_signed(
        time_skipping_env.client,
        PoolRestartWorkflow.run,
        RunbookInput(
            target="orders-db",
            requested_by="alert:alertmanager",
            alert=alert,
            close_gate_on_resolve=True,
        ),
        now=await time_skipping_env.get_current_time(),
        id=f"gate-test-{uuid.uuid4().hex[:8]}",
        task_queue="gate-tests",
        start_signal="alert_received",
        start_signal_args=[AlertSignal(status="firing", alert=alert, received_at=START)],
    )
    await wait_for_gate(handle)
    for status in ("firing", "firing", "resolved"):
        await handle.signal(
            PoolRestartWorkflow.alert_received,
            AlertSignal(status=status, alert=alert, received_at=START),
        )
    report = await handle.result()
    assert report.status == RunStatus.RESOLVED
    assert report.decisions[0].outcome == DecisionOutcome.RESOLVED
    assert kinds(report).count("alert_duplicate") == 2 and "alert_resolved" in kinds(report)
    assert system.terminated == []


async def test_false_alarm_needs_no_action(
    time_skipping_env: WorkflowEnvironment, system: FakeSystem
) -> None:
    system.total = 40
    report = await (await start(time_skipping_env)).result()
    assert report.status == RunStatus.NO_ACTION_NEEDED
    assert "gate_opened" not in kinds(report) and system.terminated == []


async def test_failed_verification_falls_back_to_a_gated_restart_then_escalates(
    time_skipping_env: WorkflowEnvironment, system: FakeSystem
) -> None:
    system.verify_passes = False
    handle = await start(time_skipping_env)
    first = await wait_for_gate(handle)
    await handle.execute_update(PoolRestartWorkflow.approve, mint("bob", first, "approve"))
    second = await eventually(lambda: _gate_other_than(handle, first.plan.plan_id))
    assert second.plan.action == "restart_app"
    await handle.execute_update(PoolRestartWorkflow.approve, mint("bob", second, "approve"))
    report = await handle.result()
    assert report.status == RunStatus.ESCALATED
    assert len(system.restarts) == 1
    assert system.notes[-1].severity == "page"


async def test_auto_approval_within_policy_and_person_beyond_it(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    write_config(tmp_path, CONFIG.format(auto=AUTO))
    small, large = FakeSystem(), FakeSystem(idle_pids=list(range(1000, 1045)))
    for fake in (small, large):
        fake.planning_allowed.set()
        fake.verifying_allowed.set()
    for fake, queue in ((small, "auto-small"), (large, "auto-large")):
        async with Worker(
            time_skipping_env.client,
            workflow_runner=WORKFLOW_RUNNER,
            task_queue=queue,
            workflows=[PoolRestartWorkflow, SafetyEnvelopeWorkflow],
            activities=fake.activities(time_skipping_env.client),  # type: ignore[arg-type]
        ):
            handle = await start_signed(
                time_skipping_env.client,
                PoolRestartWorkflow.run,
                RunbookInput(target="orders-db", requested_by="alertmanager"),
                now=await time_skipping_env.get_current_time(),
                id=f"auto-{queue}-{uuid.uuid4().hex[:6]}",
                task_queue=queue,
            )
            if fake is small:
                report = await handle.result()
                assert report.decisions[0].by_policy == "small-idle-cleanup"
                assert report.decisions[0].decided_by == "policy:small-idle-cleanup"
                assert fake.terminated == [fake.idle_pids]
            else:
                gate = await wait_for_gate(handle)  # 45 of 90 = 50%, over the 40% limit
                assert gate.plan.expected_impact.share_of_total == 0.5
                report = await handle.query(PoolRestartWorkflow.report)
                assert "auto_approval_declined" in kinds(report)
                await handle.execute_update(
                    PoolRestartWorkflow.approve,
                    mint("bob", gate, "approve"),
                )
                assert (await handle.result()).status == RunStatus.REMEDIATED


async def _gate_other_than(handle: Handle, plan_id: str) -> GateView | None:
    gate = await handle.query(PoolRestartWorkflow.pending_gate)
    return gate if gate is not None and gate.plan.plan_id != plan_id else None


async def _blocked_plan(system: FakeSystem, handle: Handle) -> str:
    """The plan id the gate will open with, computed as the runbook does (plan ids are
    deterministic hashes), while the run is held just before planning."""
    await eventually(lambda: _status_is(handle, RunStatus.PLANNING))
    share = len(system.idle_pids) / system.total
    plan = Plan(
        runbook="pool_restart",
        action="terminate_idle_sessions",
        target="orders-db",
        parameters={
            "database": "orders",
            "idle_older_than_seconds": 300,
            "sessions": [s.model_dump(mode="json") for s in system.sessions()],
        },
        expected_impact=ExpectedImpact(
            summary=f"terminate {len(system.idle_pids)} sessions idle > 300s "
            f"({share:.0%} of {system.total} connections)",
            affected=len(system.idle_pids),
            share_of_total=round(share, 4),
            effects=[terminate_effect(len(system.idle_pids), "orders")],
        ),
    )
    return plan.plan_id


async def _status_is(handle: Handle, status: RunStatus) -> bool:
    return (await handle.query(PoolRestartWorkflow.report)).status == status


def early(
    who: str, handle: Handle, kind: DecisionKind, plan_id: str, now: datetime
) -> DecisionRequest:
    """A decision for the run's first gate, signed (at the server's `now`) before it opened."""
    return mint(
        who, None, kind, workflow_id=handle.id, run_id=handle.result_run_id, gate=1,
        plan_id=plan_id, now=now,
    )  # fmt: skip


async def test_a_key_removed_while_the_gate_waits_no_longer_signs_for_it(
    time_skipping_env: WorkflowEnvironment, system: FakeSystem, tmp_path: Path
) -> None:
    """A signing key is found compromised and removed from `verify_keys` while a run waits at
    its gate: the run read it at its start, but a decision is verified with the keys as the
    worker's config lists them (read again when a minute old), so it signs nothing there."""
    _, kept = session_keys()
    compromised = decision_tokens.new_private_key_text()
    listed = decision_tokens.public_text(decision_tokens.private_key(compromised))
    write_config(
        tmp_path, CONFIG.format(auto=""), approvals=f'verify_keys = ["{kept}", "{listed}"]'
    )
    handle = await start(time_skipping_env)
    gate = await wait_for_gate(handle)
    write_config(tmp_path, CONFIG.format(auto=""), approvals=f'verify_keys = ["{kept}"]')
    await time_skipping_env.sleep(timedelta(seconds=61))

    forged = mint("bob", gate, "approve", key=compromised)  # whoever holds the key
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(PoolRestartWorkflow.approve, forged)

    assert "not a configured verify key" in str(refused.value.cause)
    report = await handle.query(PoolRestartWorkflow.report)
    [read] = [s for s in report.steps if s.kind == "verify_keys_read"]
    assert "1 added" not in read.summary and "0 added, 1 removed" in read.summary
    assert report.status == RunStatus.AWAITING_APPROVAL and system.terminated == []
    await handle.execute_update(PoolRestartWorkflow.approve, mint("bob", gate, "approve"))
    assert (await handle.result()).status == RunStatus.REMEDIATED
