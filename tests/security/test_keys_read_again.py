"""A rotation of the approval signing key while runs wait at their gates, and while the safety
envelope holds its keys (README, "Rotating the approval signing keys").

A run reads the verify keys when it starts. A decision signed with a key added to the
worker's config since then is let past the Update validator only because this worker lists
that key; the gate reads its keys again (once a minute at most) and verifies once more. Any
other unknown key is refused before it reaches the run, as before.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy

from activities import decision_tokens
from activities.approval_auth import DecisionRequest
from activities.config import load_config
from activities.safety import SAFETY_WORKFLOW_TYPE, SafetyStatus, safety_workflow_id
from tests.fake_system import CONFIG
from tests.security.conftest import Handle, World, accepted_updates
from tests.support import mint, session_keys, switch, wait_for_gate, write_config
from workers.worker import _remember_verify_keys
from workflows.models import DecisionOutcome, RunStatus
from workflows.pool_restart import PoolRestartWorkflow


def new_key() -> tuple[str, str]:
    private = decision_tokens.new_private_key_text()
    return private, decision_tokens.public_text(decision_tokens.private_key(private))


def roll_out(tmp_path: Path, keys: list[str]) -> None:
    """The worker's config now lists `keys`, and the worker has read them (as a worker
    started with that config does)."""
    listed = ", ".join(f'"{k}"' for k in keys)
    write_config(tmp_path, CONFIG.format(auto=""), approvals=f"verify_keys = [{listed}]")
    _remember_verify_keys(load_config())


async def refused(handle: Handle, request: DecisionRequest) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await handle.execute_update(PoolRestartWorkflow.approve, request)
    return str(caught.value.cause)


async def test_a_waiting_gate_accepts_a_key_added_since_its_run_began(
    world: World, tmp_path: Path
) -> None:
    _, old = session_keys()
    roll_out(tmp_path, [old])
    handle = await world.start()
    gate = await wait_for_gate(handle)
    new_private, new_public = new_key()
    roll_out(tmp_path, [old, new_public])  # rotation step 1, while the gate waits

    decided = await handle.execute_update(
        PoolRestartWorkflow.approve, mint("bob", gate, "approve", key=new_private)
    )

    assert decided.outcome == DecisionOutcome.APPROVED and decided.decided_by == "bob"
    report = await handle.result()
    assert report.status == RunStatus.REMEDIATED
    [read] = [s for s in report.steps if s.kind == "verify_keys_read"]
    kid = decision_tokens.key_id(decision_tokens.private_key(new_private))
    assert f"signing key {kid!r}, unknown to this run" in read.summary
    assert "is one of them" in read.summary
    assert world.system.terminated == [world.system.idle_pids]


async def test_a_key_no_worker_lists_is_refused_before_the_run_and_reads_nothing(
    world: World, tmp_path: Path
) -> None:
    _, old = session_keys()
    roll_out(tmp_path, [old])
    handle = await world.start()
    gate = await wait_for_gate(handle)
    forged_private, _ = new_key()  # the attacker's own key, in no config

    assert "not a configured verify key" in await refused(
        handle, mint("bob", gate, "approve", key=forged_private)
    )

    events = list((await handle.fetch_history()).events)
    assert accepted_updates(events) == [], "the forged decision never entered the run"
    report = await handle.query(PoolRestartWorkflow.report)
    assert report.status == RunStatus.AWAITING_APPROVAL
    assert not [s for s in report.steps if s.kind == "verify_keys_read"]
    assert world.refusals() >= 1
    await handle.terminate()


async def test_keys_are_read_again_at_most_once_a_minute(world: World, tmp_path: Path) -> None:
    """A key the worker lists but the run still does not after reading its keys (the config
    changed again since): the first decision reads the keys and is refused, recorded; another
    within the minute is refused in the validator, without reading them again."""
    _, old = session_keys()
    roll_out(tmp_path, [old])
    handle = await world.start()
    gate = await wait_for_gate(handle)
    late_private, late_public = new_key()
    roll_out(tmp_path, [old, late_public])
    roll_out(tmp_path, [old])  # ...and taken out again before the gate reads its keys
    decision = mint("bob", gate, "approve", key=late_private)

    assert "not a configured verify key" in await refused(handle, decision)
    report = await handle.query(PoolRestartWorkflow.report)
    [read] = [s for s in report.steps if s.kind == "verify_keys_read"]
    assert "is not)" in read.summary
    assert [s for s in report.steps if s.kind == "decision_refused"]
    again = mint("bob", gate, "approve", key=late_private)
    assert "less than a minute ago" in await refused(handle, again)
    report = await handle.query(PoolRestartWorkflow.report)
    assert len([s for s in report.steps if s.kind == "verify_keys_read"]) == 1
    assert len(accepted_updates(list((await handle.fetch_history()).events))) == 1
    assert report.status == RunStatus.AWAITING_APPROVAL
    await handle.terminate()


async def test_the_kill_switch_accepts_a_key_added_since_the_envelope_read_its_keys(
    world: World, tmp_path: Path
) -> None:
    _, old = session_keys()
    roll_out(tmp_path, [old])
    envelope = await world.client.start_workflow(
        SAFETY_WORKFLOW_TYPE,
        id=safety_workflow_id(world.queue),
        task_queue=world.queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    paused = await envelope.execute_update(
        "pause", switch("carol", "pause", envelope.id, "before"), result_type=SafetyStatus
    )
    assert paused.paused  # the envelope has read its keys: the old one only
    new_private, new_public = new_key()
    roll_out(tmp_path, [old, new_public])

    resume = switch("bob", "resume", envelope.id, "after the rotation", key=new_private)
    resumed = await envelope.execute_update("resume", resume, result_type=SafetyStatus)

    assert not resumed.paused
    kinds = [r.kind for r in resumed.audit]
    assert kinds[-2:] == ["keys_read", "resumed"], kinds
