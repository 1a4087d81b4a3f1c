"""A gate that re-opens with an identical plan is a new gate and can be decided again
(scenario: read_only's exit rejected, the hold ended again, then approved). Real dev server,
the real read_only runbook on the demo app's maintenance flag, decisions through the approval
service's own code path (`workers.approvals.decide`, the function the HTTP API calls)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
from temporalio.testing import WorkflowEnvironment

from activities.config import load_config
from tests.support import TOKENS, DemoApp, Receiver, eventually, start_signed, write_config
from workers.approvals import decide, end_hold
from workers.worker import build_worker
from workflows.models import DecisionOutcome, GateView, RunbookInput, RunStatus
from workflows.read_only import ReadOnlyWorkflow

CONFIG = """
[targets.orders-app]
kind = "http"
health_url = "{app}/health"

[targets.orders-app.app_flag]
url = "{app}/admin/maintenance"
token = {{ env = "DEMO_ADMIN_TOKEN_RO" }}
write_probe_url = "{app}/orders/probe"
read_probe_url = "{app}/orders"

[runbooks.read_only]
hold_ttl = 3600
remind_every = 600
verify_consecutive = 1
verify_interval_seconds = 0.3
verify_deadline_seconds = 20

[notify]
webhook_url = "{webhook}"
"""


async def test_an_exit_gate_rejected_then_reopened_can_be_approved(
    dev_env: WorkflowEnvironment, demo_app: DemoApp, webhook: Receiver, tmp_path: Path
) -> None:
    os.environ["DEMO_ADMIN_TOKEN_RO"] = demo_app.admin_token
    hook = f"http://127.0.0.1:{webhook.server_address[1]}/hook"
    write_config(tmp_path, CONFIG.format(app=demo_app.url, webhook=hook))
    config, client, queue = load_config(), dev_env.client, f"reopen-{uuid.uuid4().hex[:6]}"

    async def gate_of(action_prefix: str, after: int = 0) -> GateView:
        async def probe() -> GateView | None:
            gate = await handle.query(ReadOnlyWorkflow.pending_gate)
            return gate if gate and gate.gate > after else None

        gate = await eventually(probe, 30)
        assert gate.plan.action.startswith(action_prefix), gate.plan.action
        return gate

    async def writes() -> int:
        async with httpx.AsyncClient(timeout=10) as http:
            return (await http.post(f"{demo_app.url}/orders", json={})).status_code

    async with build_worker(client, queue):
        handle = await start_signed(
            client,
            ReadOnlyWorkflow.run,
            RunbookInput(
                target="orders-app", requested_by="alice", parameters={"mode": "app_flag"}
            ),
            id=f"read_only-orders-app-{uuid.uuid4().hex[:6]}",
            task_queue=queue,
        )
        enter = await gate_of("enter")
        await decide(client, config, TOKENS["bob"], handle.id, "approve", "", enter.plan.plan_id)
        await eventually(lambda: _holding(handle), 30)
        assert await writes() in (423, 503)

        await end_hold(client, config, TOKENS["alice"], handle.id, "incident over")
        first_exit = await gate_of("exit", enter.gate)
        rejected = await decide(
            client, config, TOKENS["bob"], handle.id, "reject", "not yet", first_exit.plan.plan_id
        )
        assert rejected.outcome == DecisionOutcome.REJECTED
        await eventually(lambda: _holding(handle), 30)
        assert await writes() in (423, 503)

        # The hold ends again: the same exit plan, a new gate, and bob may now approve it.
        await end_hold(client, config, TOKENS["alice"], handle.id, "really over")
        second_exit = await gate_of("exit", first_exit.gate)
        assert second_exit.plan.plan_id == first_exit.plan.plan_id
        assert second_exit.gate > first_exit.gate
        approved = await decide(
            client, config, TOKENS["bob"], handle.id, "approve", "", second_exit.plan.plan_id
        )
        assert approved.outcome == DecisionOutcome.APPROVED
        report = await handle.result()
    assert report.status == RunStatus.REMEDIATED, report.summary
    assert await writes() < 300
    gates = [(d.gate, d.outcome) for d in report.decisions]
    assert gates == [
        (enter.gate, DecisionOutcome.APPROVED),
        (first_exit.gate, DecisionOutcome.REJECTED),
        (second_exit.gate, DecisionOutcome.APPROVED),
    ]


async def _holding(handle: object) -> bool:
    report = await handle.query(ReadOnlyWorkflow.report)  # type: ignore[attr-defined]
    return bool(report.status == RunStatus.HOLDING)
