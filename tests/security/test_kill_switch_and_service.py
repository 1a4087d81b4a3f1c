"""Attacks on the kill switch and on the ways into a run: pause and resume are decisions the
approval service signs (resume for its group only) and the envelope verifies and records; the
CLI cannot decide without the service; a start through the service authenticates the
requester. Real dev server, real approval service process, the CLI as a subprocess."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy

from activities import decision_tokens
from activities.safety import (
    SAFETY_WORKFLOW_TYPE,
    PauseRequest,
    SafetyQuery,
    SafetyStatus,
    safety_workflow_id,
)
from infra.demo_config import service_environment, worker_environment
from tests.security.conftest import World, accepted_updates
from tests.support import TOKENS, session_keys, wait_for_gate
from workflows.models import DecisionOutcome, RunReport, RunStatus
from workflows.pool_restart import PoolRestartWorkflow


async def call(service: str, path: str, who: str, body: Mapping[str, object]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=service, timeout=30) as http:
        return await http.post(path, json=body, headers={"Authorization": f"Bearer {TOKENS[who]}"})


async def scrape(service: str) -> str:
    async with httpx.AsyncClient(base_url=service, timeout=30) as http:
        return (await http.get("/metrics")).text


async def switch_state(world: World) -> SafetyStatus:
    handle = world.client.get_workflow_handle(safety_workflow_id(world.queue))
    status: SafetyStatus = await handle.query(
        "status", SafetyQuery(target="", runbook=""), result_type=SafetyStatus
    )
    return status


async def raw_switch(world: World, kind: str, request: PauseRequest) -> str:
    handle = await world.client.start_workflow(
        SAFETY_WORKFLOW_TYPE,
        id=safety_workflow_id(world.queue),
        task_queue=world.queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await handle.execute_update(kind, request, result_type=SafetyStatus)
    return str(caught.value.cause)


async def test_the_kill_switch_is_resumed_only_by_a_signed_lead(world: World, service: str) -> None:
    paused = await call(service, "/safety/pause", "alice", {"reason": "db migration"})
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] and paused.json()["paused_by"] == "alice"
    assert "remediate_kill_switch_engaged 1.0" in await scrape(service)

    # Straight through Temporal, as anyone: unsigned, or a pause token relabelled, or signed
    # by a key the worker does not know.
    assert "unsigned" in await raw_switch(world, "resume", PauseRequest(by="mallory"))
    envelope = safety_workflow_id(world.queue)
    foreign = decision_tokens.issue(
        decision_tokens.private_key(decision_tokens.new_private_key_text()),
        audience="safety", kind="resume", subject="bob", groups=["engineering-leads"],
        workflow_id=envelope, now=datetime.now(UTC),
        ttl=timedelta(minutes=5),
    )  # fmt: skip
    assert "not a configured verify key" in await raw_switch(
        world, "resume", PauseRequest(token=foreign)
    )
    # Signed with the real key for someone outside the resume group: still refused.
    alice_resume = decision_tokens.issue(
        decision_tokens.private_key(session_keys()[0]),
        audience="safety", kind="resume", subject="alice", groups=["sre"],
        workflow_id=envelope, now=datetime.now(UTC),
        ttl=timedelta(minutes=5),
    )  # fmt: skip
    assert "not in engineering-leads" in await raw_switch(
        world, "resume", PauseRequest(token=alice_resume)
    )
    # Through the service, alice is refused before anything is signed.
    denied = await call(service, "/safety/resume", "alice", {"reason": "done"})
    assert denied.status_code == 403 and "not in engineering-leads" in denied.json()["error"]
    state = await switch_state(world)
    assert state.paused and state.paused_by == "alice"
    assert world.refusals() >= 3

    resumed = await call(service, "/safety/resume", "bob", {"reason": "migration finished"})
    assert resumed.status_code == 200 and not resumed.json()["paused"]
    metrics = await scrape(service)
    assert "remediate_kill_switch_engaged 0.0" in metrics
    assert "remediate_leases_held 0.0" in metrics
    audit = [(r.kind, r.by, r.reason) for r in (await switch_state(world)).audit]
    assert audit == [("paused", "alice", "db migration"), ("resumed", "bob", "migration finished")]

    # bob's resume, replayed from the envelope's history, is not a second decision.
    handle = world.client.get_workflow_handle(envelope)
    events = list((await handle.fetch_history()).events)
    assert len(accepted_updates(events)) == 2  # the refused ones never entered it


async def test_the_cli_cannot_decide_without_the_service_even_holding_the_key(
    world: World, tmp_path: Path
) -> None:
    handle = await world.start()
    await wait_for_gate(handle)
    env = {
        **os.environ,
        "REMEDIATE_TOKEN": TOKENS["bob"],
        "REMEDIATE_CONFIG": str(world.config),
        # The private key in its environment does not make the CLI a signer.
        "REMEDIATE_APPROVAL_SIGNING_KEY": session_keys()[0],
        "REMEDIATE_API_URL": "http://127.0.0.1:9",
        "REMEDIATE_TEMPORAL_ADDRESS": world.client.service_client.config.target_host,
        "REMEDIATE_TASK_QUEUE": world.queue,
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "workers.cli", "approve", handle.id],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "cannot reach the approval service" in done.stderr
    assert await handle.query(PoolRestartWorkflow.pending_gate) is not None
    assert world.system.terminated == []
    await handle.terminate()


def test_workers_get_the_public_key_only() -> None:
    """The local stack's worker environment holds the verify key, never the signing key."""
    values = {
        "PG_SUPERUSER_PASSWORD": "p", "DEMO_APP_ADMIN_TOKEN": "t", "ALERTMANAGER_TOKEN": "a",
        "GRAFANA_WEBHOOK_SECRET": "g", "PAGERDUTY_WEBHOOK_SECRET": "d",
        "GENERIC_WEBHOOK_SECRET": "w", "VERCEL_TOKEN": "v",
        "REMEDIATE_APPROVAL_SIGNING_KEY": decision_tokens.new_private_key_text(),
    }  # fmt: skip
    worker = worker_environment(values)
    assert "REMEDIATE_APPROVAL_SIGNING_KEY" not in worker
    assert values["REMEDIATE_APPROVAL_SIGNING_KEY"] not in worker.values()
    assert service_environment(values)["REMEDIATE_APPROVAL_SIGNING_KEY"]
    assert worker["REMEDIATE_APPROVAL_VERIFY_KEY"] == decision_tokens.public_text(
        decision_tokens.private_key(values["REMEDIATE_APPROVAL_SIGNING_KEY"])
    )


async def test_a_start_through_the_service_authenticates_the_requester(
    world: World, service: str
) -> None:
    started = await call(
        service, "/runs", "alice", {"runbook": "pool_restart", "target": "orders-db"}
    )
    assert started.status_code == 200, started.text
    assert started.json()["requested_by"] == "alice" and started.json()["started"]
    handle = world.client.get_workflow_handle(started.json()["workflow_id"], result_type=RunReport)
    gate = await wait_for_gate(handle)
    assert gate.requester_verified and gate.approvals_required == 1
    # alice cannot approve her own run; one lead's approval is enough.
    refused = await call(
        service, f"/approvals/{handle.id}/approve", "alice", {"plan_id": gate.plan.plan_id}
    )
    assert refused.status_code == 403 and "not in the required group" in refused.json()["error"]
    decided = await call(
        service, f"/approvals/{handle.id}/approve", "bob", {"plan_id": gate.plan.plan_id}
    )
    assert decided.status_code == 200 and decided.json()["outcome"] == DecisionOutcome.APPROVED
    assert (await handle.result()).status == RunStatus.REMEDIATED
    # Bad input changes nothing and says what is wrong.
    for body, status in [
        ({"runbook": "nope", "target": "orders-db"}, 404),
        ({"runbook": "pool_restart", "target": "nope"}, 404),
        ({"runbook": "pool_restart"}, 422),
    ]:
        bad = await call(service, "/runs", "alice", body)
        assert bad.status_code == status, bad.text
    unauthenticated = await call(service, "/runs", "mallory", {})
    assert unauthenticated.status_code in (401, 422)


async def test_a_second_reject_is_never_a_silent_success(world: World, service: str) -> None:
    """Each request is its own decision (its own id): a second reject of a gate already
    rejected is told so, not handed the first one's cached result as if it had worked."""
    started = await call(
        service, "/runs", "alice", {"runbook": "pool_restart", "target": "orders-db"}
    )
    handle = world.client.get_workflow_handle(started.json()["workflow_id"], result_type=RunReport)
    gate = await wait_for_gate(handle)
    body = {"plan_id": gate.plan.plan_id, "reason": "not now"}
    first = await call(service, f"/approvals/{handle.id}/reject", "bob", body)
    assert first.status_code == 200 and first.json()["outcome"] == "rejected", first.text
    second = await call(service, f"/approvals/{handle.id}/reject", "bob", body)
    assert second.status_code == 409, second.text
    report = await handle.result()
    assert report.status == RunStatus.REJECTED and world.system.terminated == []
    assert [(d.outcome, d.decided_by) for d in report.decisions] == [
        (DecisionOutcome.REJECTED, "bob")
    ]
