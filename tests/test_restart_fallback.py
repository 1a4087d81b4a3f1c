"""When killing idle sessions cannot help, pool_restart plans an app restart through the app's
restart hook: real dev server, real Postgres, the demo app and a webhook receiver over HTTP."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
import pytest
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.deploy.models import RestartAppInput
from activities.deploy.restart_hook import restart_app
from tests.support import (
    DemoApp,
    OrdersDatabase,
    Receiver,
    start_signed,
    wait_for_gate,
    write_config,
)
from tests.support import mint as mint_decision
from workers.worker import build_worker
from workflows.models import RunbookInput, RunReport, RunStatus
from workflows.pool_restart import PoolRestartWorkflow

CONFIG = """
[targets.orders-db]
kind = "postgres"
dsn = {{ env = "ORDERS_DB_DSN_RESTART" }}
health_url = "{app}/health"
restart = {{ url = "{app}/admin/restart", token = {{ env = "DEMO_ADMIN_TOKEN_RESTART" }} }}

[runbooks.pool_restart]
usage_threshold = 0.25
idle_older_than_seconds = 3600
verify_consecutive = 2
verify_interval_seconds = 0.5
verify_deadline_seconds = 30

[notify]
webhook_url = "{webhook}"
webhook_token = {{ env = "WEBHOOK_TOKEN_RESTART" }}
"""


@pytest.fixture
def restart_config(
    tmp_path: Path, orders_db: OrdersDatabase, demo_app: DemoApp, webhook: Receiver
) -> Path:
    os.environ["ORDERS_DB_DSN_RESTART"] = orders_db.admin_dsn
    os.environ["DEMO_ADMIN_TOKEN_RESTART"] = demo_app.admin_token
    os.environ["WEBHOOK_TOKEN_RESTART"] = "hook-" + uuid.uuid4().hex
    url = f"http://127.0.0.1:{webhook.server_address[1]}/hook"
    return write_config(tmp_path, CONFIG.format(app=demo_app.url, webhook=url))


async def test_exhaustion_without_stale_sessions_is_fixed_by_a_gated_restart(
    dev_env: WorkflowEnvironment, demo_app: DemoApp, webhook: Receiver, restart_config: Path
) -> None:
    async with httpx.AsyncClient(base_url=demo_app.url) as app:
        leaked = (await app.post("/debug/leak", params={"connections": 40})).json()
        assert leaked["opened"] == 40
        queue = f"restart-{uuid.uuid4().hex[:6]}"
        async with build_worker(dev_env.client, queue):
            handle = await start_signed(
                dev_env.client,
                PoolRestartWorkflow.run,
                RunbookInput(target="orders-db", requested_by="alice"),
                id=f"pool_restart-orders-db-{uuid.uuid4().hex[:6]}",
                task_queue=queue,
            )
            gate = await wait_for_gate(handle)
            assert gate.plan.action == "restart_app"
            await handle.execute_update(
                PoolRestartWorkflow.approve,
                mint_decision("bob", gate, "approve"),
            )
            report: RunReport = await handle.result()
        assert report.status == RunStatus.REMEDIATED, report.summary
        assert (await app.get("/health")).json()["leaked_connections"] == 0
    events = [note["event"] for note in webhook.received]
    assert events[0] == "gate_opened"
    assert "restart the application" in webhook.received[0]["message"]
    assert set(webhook.authorizations) == {f"Bearer {os.environ['WEBHOOK_TOKEN_RESTART']}"}


async def test_restart_hook_runs_once_per_idempotency_key(
    demo_app: DemoApp, restart_config: Path
) -> None:
    env = ActivityEnvironment()
    key = f"wf/run/{uuid.uuid4().hex}"
    first = await env.run(restart_app, RestartAppInput(target="orders-db", idempotency_key=key))
    again = await env.run(restart_app, RestartAppInput(target="orders-db", idempotency_key=key))
    assert (first.already_done, again.already_done) == (False, True)


async def test_restart_hook_refusing_our_credential_is_not_retried(
    demo_app: DemoApp, restart_config: Path
) -> None:
    os.environ["DEMO_ADMIN_TOKEN_RESTART"] = "wrong-token"
    with pytest.raises(Exception, match="refused our credential"):
        await ActivityEnvironment().run(
            restart_app, RestartAppInput(target="orders-db", idempotency_key="k")
        )
