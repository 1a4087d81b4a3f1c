"""Every way we know to make a gate act on a decision that is not "this person, authenticated,
approved this plan, in this run, at this gate, just now" (issue: the approval gate holds).

Each test performs the attack against the real gate on a real Temporal dev server, with raw
client access (what anyone with network access to Temporal has), and checks that it was
refused, that nothing was acted on, and that the refusal was recorded: in the run's audit
trail (an authentic decision that policy refuses) or, for a decision that is not authentic or
not bound to this gate, by the worker's log and refusal metric without touching the run's
history at all.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter

from activities import decision_tokens
from activities.approval_auth import DecisionRequest
from tests.fake_system import AUTO, CONFIG
from tests.security.conftest import Handle, World, accepted_updates
from tests.support import eventually, mint, session_keys, wait_for_gate, write_config
from workflows.models import DecisionOutcome, RunStatus
from workflows.pool_restart import PoolRestartWorkflow


async def refused(handle: Handle, request: DecisionRequest, kind: str = "approve") -> str:
    update = PoolRestartWorkflow.approve if kind == "approve" else PoolRestartWorkflow.reject
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await handle.execute_update(update, request)
    return str(caught.value.cause)


async def history_size(handle: Handle) -> int:
    return len((await handle.fetch_history()).events)


def decision_in_history(events: list[object]) -> DecisionRequest:
    """The approve Update as anyone with read access to the history sees it."""
    [event] = accepted_updates(events)  # type: ignore[arg-type]
    attributes = event.workflow_execution_update_accepted_event_attributes
    payload = attributes.accepted_request.input.args.payloads[0]
    decision = pydantic_data_converter.payload_converter.from_payload(payload, DecisionRequest)
    assert isinstance(decision, DecisionRequest)
    return decision


async def test_an_approval_replayed_from_an_earlier_run_is_refused(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    workflow_id = "pool_restart-orders-db-replay"
    first = await world.start(workflow_id=workflow_id)
    gate = await wait_for_gate(first)
    await first.execute_update(PoolRestartWorkflow.approve, mint("bob", gate, "approve"))
    assert (await first.result()).status == RunStatus.REMEDIATED
    captured = decision_in_history(list((await first.fetch_history()).events))

    # The next run with the same workflow id: sent before its gate opens, the captured
    # decision is not held for it, and sent at its gate it is refused.
    world.system.planning_allowed.clear()
    second = await world.start(workflow_id=workflow_id)
    await eventually(lambda: _diagnosed(second))
    with caplog.at_level(logging.WARNING):
        assert "not this run" in await refused(second, captured)
        world.system.planning_allowed.set()
        await wait_for_gate(second)
        assert "not this run" in await refused(second, captured)
    assert world.refusals() == 2
    assert "refused approve decision from 'bob'" in caplog.text
    assert accepted_updates(list((await second.fetch_history()).events)) == []
    assert (await second.query(PoolRestartWorkflow.report)).status == RunStatus.AWAITING_APPROVAL
    assert world.system.terminated == [world.system.idle_pids]  # the first run's, only
    await second.terminate()


async def test_forged_stale_and_misbound_decisions_never_reach_the_run(world: World) -> None:
    handle = await world.start()
    gate = await wait_for_gate(handle)
    before = await history_size(handle)
    other_key = decision_tokens.new_private_key_text()
    genuine = mint("bob", gate, "approve")
    head, body, signature = genuine.token.split(".")
    attacks = {
        "unsigned": DecisionRequest(approver="bob", plan_id=gate.plan.plan_id),
        "garbage": DecisionRequest(token="not.a.token"),
        "unknown key": mint("bob", gate, "approve", key=other_key),
        "expired": mint("bob", gate, "approve", now=gate.opened_at - timedelta(minutes=20)),
        "future": mint("bob", gate, "approve", now=gate.opened_at + timedelta(minutes=10)),
        "other workflow": mint("bob", gate, "approve", workflow_id="pool_restart-other"),
        "other run": mint("bob", gate, "approve", run_id="an-earlier-run"),
        "later gate": mint("bob", gate, "approve", gate=gate.gate + 1),
        "earlier gate": mint("bob", gate, "approve", gate=0),
        "other plan": mint("bob", gate, "approve", plan_id="0123456789abcdef"),
        "altered": DecisionRequest(token=f"{head}.{body[:-4]}AAAA.{signature}"),
        "reject sent as approve": mint("bob", gate, "reject"),
    }
    for name, attack in attacks.items():
        assert "decision refused" in await refused(handle, attack), name
    # Each counted (a refused Update may be validated again, e.g. by a retried task).
    assert world.refusals() >= len(attacks)
    # None of them entered the run: no Update event was added to its history (workflow
    # tasks may be, when a busy machine makes the gate's timers fire meanwhile).
    added = list((await handle.fetch_history()).events)[before:]
    assert not [e for e in added if "UPDATE" in EventType.Name(e.event_type)], added
    assert (await handle.query(PoolRestartWorkflow.report)).status == RunStatus.AWAITING_APPROVAL
    # The genuine decision still works, once.
    await handle.execute_update(PoolRestartWorkflow.approve, genuine)
    assert "already used" in await refused(handle, genuine)
    assert (await handle.result()).status == RunStatus.REMEDIATED
    assert world.system.terminated == [world.system.idle_pids]


async def test_a_key_rotated_out_no_longer_signs(world: World, tmp_path: Path) -> None:
    old_private, old_public = session_keys()
    new_private = decision_tokens.new_private_key_text()
    new_public = decision_tokens.public_text(decision_tokens.private_key(new_private))
    # While rotating, both keys are listed: a decision signed by the new key is accepted.
    _write_keys(tmp_path, [old_public, new_public])
    handle = await world.start()
    gate = await wait_for_gate(handle)
    decided = await handle.execute_update(
        PoolRestartWorkflow.approve, mint("bob", gate, "approve", key=new_private)
    )
    assert decided.outcome == DecisionOutcome.APPROVED
    await handle.result()
    # The old key removed: a decision it signs is refused.
    _write_keys(tmp_path, [new_public])
    handle = await world.start()
    gate = await wait_for_gate(handle)
    assert "not a configured verify key" in await refused(
        handle, mint("bob", gate, "approve", key=old_private)
    )
    await handle.execute_update(
        PoolRestartWorkflow.reject, mint("bob", gate, "reject", key=new_private)
    )
    assert (await handle.result()).status == RunStatus.REJECTED


def _write_keys(tmp_path: Path, keys: list[str]) -> None:
    listed = ", ".join(f'"{k}"' for k in keys)
    write_config(tmp_path, CONFIG.format(auto=""), approvals=f"verify_keys = [{listed}]")


async def test_the_requester_cannot_approve_their_own_run(world: World) -> None:
    handle = await world.start(requested_by="bob")
    gate = await wait_for_gate(handle)
    assert gate.requester_verified
    assert "requested this run" in await refused(handle, mint("bob", gate, "approve"))
    await handle.execute_update(PoolRestartWorkflow.reject, mint("carol", gate, "reject"))
    report = await handle.result()
    assert report.status == RunStatus.REJECTED and world.system.terminated == []
    refusal = next(s for s in report.steps if s.kind == "decision_refused")
    assert refusal.actor == "bob" and "requested this run" in refusal.summary


async def test_a_raw_start_naming_someone_else_needs_two_distinct_approvers(
    world: World,
) -> None:
    # bob starts a run straight through Temporal, claiming alice asked, then approves it.
    handle = await world.start(requested_by="alice", signed=False)
    gate = await wait_for_gate(handle)
    assert not gate.requester_verified and gate.approvals_required == 2
    counted = await handle.execute_update(PoolRestartWorkflow.approve, mint("bob", gate, "approve"))
    assert counted.outcome == DecisionOutcome.COUNTED and counted.reason == "1 of 2 approvals"
    # The same person twice is still one approval.
    again = await handle.execute_update(PoolRestartWorkflow.approve, mint("bob", gate, "approve"))
    assert again.outcome == DecisionOutcome.COUNTED
    view = await handle.query(PoolRestartWorkflow.pending_gate)
    assert view is not None and view.approvals_text() == "1 of 2 approvals (bob)"
    assert world.system.terminated == []
    done = await handle.execute_update(PoolRestartWorkflow.approve, mint("carol", gate, "approve"))
    assert done.outcome == DecisionOutcome.APPROVED and done.approvers == ["bob", "carol"]
    report = await handle.result()
    assert report.status == RunStatus.REMEDIATED
    kinds = [s.kind for s in report.steps]
    assert "requester_unverified" in kinds and "decision_duplicate" in kinds


async def test_a_raw_start_naming_the_approver_is_still_four_eyes(world: World) -> None:
    handle = await world.start(requested_by="bob", signed=False)
    gate = await wait_for_gate(handle)
    assert "requested this run" in await refused(handle, mint("bob", gate, "approve"))
    await handle.execute_update(PoolRestartWorkflow.reject, mint("carol", gate, "reject"))
    assert (await handle.result()).status == RunStatus.REJECTED
    assert world.system.terminated == []


@pytest.mark.parametrize("config_text", [CONFIG.format(auto=AUTO)])
async def test_a_raw_start_never_passes_auto_approval(world: World) -> None:
    world.system.idle_pids = world.system.idle_pids[:10]  # within the policy's limits
    raw = await world.start(signed=False)
    gate = await wait_for_gate(raw)
    assert gate.approvals_required == 2 and world.system.terminated == []
    await raw.execute_update(PoolRestartWorkflow.reject, mint("bob", gate, "reject"))
    report = await raw.result()
    declined = next(s for s in report.steps if s.kind == "auto_approval_declined")
    assert "not authenticated" in declined.summary
    # The same plan, started through the approval service, passes unattended.
    signed = await world.start()
    assert (await signed.result()).status == RunStatus.REMEDIATED
    assert world.system.terminated == [world.system.idle_pids]


@pytest.mark.parametrize(
    "config_text",
    [CONFIG.format(auto="").replace('required_group = "engineering-leads"',
                                    'required_group = "engineering-leads"\nmin_approvals = 2')],
)  # fmt: skip
async def test_a_quorum_needs_distinct_leads(world: World) -> None:
    handle = await world.start()
    gate = await wait_for_gate(handle)
    assert gate.approvals_required == 2
    await handle.execute_update(PoolRestartWorkflow.approve, mint("bob", gate, "approve"))
    await handle.execute_update(PoolRestartWorkflow.approve, mint("bob", gate, "approve"))
    # Not in the group: refused and recorded, and not counted.
    assert "not in the required group" in await refused(handle, mint("mallory", gate, "approve"))
    assert world.system.terminated == []
    view = await handle.query(PoolRestartWorkflow.pending_gate)
    assert view is not None and view.approved_by == ["bob"]
    await handle.execute_update(PoolRestartWorkflow.approve, mint("carol", gate, "approve"))
    report = await handle.result()
    assert report.status == RunStatus.REMEDIATED
    assert report.decisions[-1].approvers == ["bob", "carol"]
    assert [s.actor for s in report.steps if s.kind == "decision_refused"] == ["mallory"]


async def test_junk_updates_do_not_grow_a_runs_history(world: World) -> None:
    handle = await world.start()
    gate = await wait_for_gate(handle)
    before = await history_size(handle)
    junk = [DecisionRequest(token="x" * n, plan_id=str(n)) for n in range(1, 30)]
    await asyncio.gather(*(refused(handle, j) for j in junk))
    # No Update entered the history, and nothing was audited (at most the workflow tasks that
    # carried them were recorded).
    added = list((await handle.fetch_history()).events)[before:]
    assert not [e for e in added if "UPDATE" in EventType.Name(e.event_type)], added
    assert world.refusals() >= len(junk)  # a refused Update may be validated more than once
    report = await handle.query(PoolRestartWorkflow.report)
    assert not [s for s in report.steps if s.kind.startswith("decision")]
    await handle.execute_update(PoolRestartWorkflow.reject, mint("bob", gate, "reject"))
    await handle.result()


async def _diagnosed(handle: Handle) -> bool:
    """The run has described its target (so it holds the keys that verify decisions)."""
    report = await handle.query(PoolRestartWorkflow.report)
    return any(step.kind == "diagnosis" for step in report.steps)
