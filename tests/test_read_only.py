"""read_only end to end: a real Temporal dev server, a real Postgres, the demo app over HTTP.

Postgres mode: sessions opened before and after entering cannot write, reads work, the hold
survives a worker restart, and after the exit gate writes work. Application-flag mode: the
demo app refuses writes while held; a rejected exit keeps it read-only; cancelling the run
restores writes. The hold's TTL ends it with reminders on the way.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.approval_auth import AuthenticationFailedError
from activities.config import load_config
from infra.local_postgres import PostgresServer
from tests.support import (
    TOKENS,
    DemoApp,
    Receiver,
    eventually,
    mint,
    record_history,
    start_signed,
    write_config,
)
from workers.approvals import end_hold
from workers.worker import WORKFLOW_RUNNER, WORKFLOWS, build_worker
from workflows.models import GateView, RunbookInput, RunReport, RunStatus
from workflows.read_only import EndHold, ReadOnlyWorkflow

CONFIG = """
[targets.inventory-db]
kind = "postgres"
dsn = {{ env = "INVENTORY_DSN_TEST" }}

[targets.orders-app]
kind = "http"
health_url = "{app}/health"

[targets.orders-app.app_flag]
url = "{app}/admin/maintenance"
token = {{ env = "DEMO_ADMIN_TOKEN_RO" }}
write_probe_url = "{app}/orders/probe"
read_probe_url = "{app}/orders"

[runbooks.read_only]
hold_ttl = {ttl}
remind_every = {remind}
verify_consecutive = 2
verify_interval_seconds = 0.3
verify_deadline_seconds = 20

[notify]
webhook_url = "{webhook}"
"""

Handle = WorkflowHandle[Any, RunReport]


@pytest.fixture(scope="module")
def inventory(postgres: PostgresServer) -> Iterator[str]:
    """A database of its own: read-only mode must not reach the other tests' databases."""
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE inventory_app LOGIN PASSWORD 'inventory-pw'")
        conn.execute("CREATE DATABASE inventory OWNER inventory_app")
    app_dsn = postgres.dsn("inventory", user="inventory_app", password="inventory-pw")
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id serial PRIMARY KEY, sku text NOT NULL)")
        conn.execute("INSERT INTO items (sku) VALUES ('a'), ('b')")
    os.environ["INVENTORY_DSN_TEST"] = postgres.dsn("inventory")
    yield app_dsn
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute("ALTER DATABASE inventory RESET default_transaction_read_only")


def configure(
    tmp_path: Path, demo_app: DemoApp, webhook: Receiver, ttl: int = 3600, remind: int = 600
) -> None:
    os.environ["DEMO_ADMIN_TOKEN_RO"] = demo_app.admin_token
    url = f"http://127.0.0.1:{webhook.server_address[1]}/hook"
    write_config(tmp_path, CONFIG.format(app=demo_app.url, webhook=url, ttl=ttl, remind=remind))


async def start(env: WorkflowEnvironment, queue: str, target: str, **params: str) -> Handle:
    return await start_signed(
        env.client,
        ReadOnlyWorkflow.run,
        RunbookInput(target=target, requested_by="alice", parameters=params),
        id=f"read_only-{target}-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
    )


async def approve(handle: Handle, who: str, action: str) -> GateView:
    gate = await _gate_for(handle, action)
    await handle.execute_update(ReadOnlyWorkflow.approve, mint(who, gate, "approve"))
    return gate


async def _gate_for(handle: Handle, action: str) -> GateView:
    async def probe() -> GateView | None:
        gate = await handle.query(ReadOnlyWorkflow.pending_gate)
        return gate if gate is not None and gate.plan.action == action else None

    return await eventually(probe, 30)


async def holding(handle: Handle) -> bool:
    return (await handle.query(ReadOnlyWorkflow.report)).status == RunStatus.HOLDING


def insert(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO items (sku) VALUES ('x')")


async def test_postgres_read_only_holds_across_a_worker_restart_and_exits_by_gate(
    dev_env: WorkflowEnvironment,
    inventory: str,
    demo_app: DemoApp,
    webhook: Receiver,
    tmp_path: Path,
) -> None:
    configure(tmp_path, demo_app, webhook)
    queue = f"ro-{uuid.uuid4().hex[:6]}"
    before = psycopg.connect(inventory, autocommit=True, application_name="inventory-api")
    async with build_worker(dev_env.client, queue):
        handle = await start(dev_env, queue, "inventory-db")
        gate = await approve(handle, "bob", "enter_read_only")
        assert gate.plan.parameters["statements"][0] == (
            'ALTER DATABASE "inventory" SET default_transaction_read_only = on'
        )
        await eventually(lambda: holding(handle))

    # Held with no worker running: the database stays read-only for everyone.
    with pytest.raises(psycopg.OperationalError):
        before.execute("INSERT INTO items (sku) VALUES ('before')")
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        insert(inventory)
    with psycopg.connect(inventory) as fresh:
        assert fresh.execute("SELECT count(*) FROM items").fetchone() == (2,)

    async with build_worker(dev_env.client, queue):  # a new worker picks the hold up
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(ReadOnlyWorkflow.end_hold, EndHold(requested_by=""))
        assert "say who" in str(refused.value.cause)
        # What `remediate end-hold` and POST /runs/{id}/end-hold do: as the token's identity.
        with pytest.raises(AuthenticationFailedError):
            await end_hold(dev_env.client, load_config(), "not-a-token", handle.id)
        said = await end_hold(dev_env.client, load_config(), TOKENS["alice"], handle.id, "done")
        assert "waits for approval" in said
        await approve(handle, "carol", "exit_read_only")
        report = await handle.result()
    assert report.status == RunStatus.REMEDIATED, report.summary
    insert(inventory)
    kinds = [s.kind for s in report.steps]
    assert kinds.index("holding") < kinds.index("hold_ended") < kinds.index("finished")
    assert [s.actor for s in report.steps if s.kind == "hold_ended"] == ["alice"]
    history = await handle.fetch_history()
    assert os.environ["INVENTORY_DSN_TEST"] not in json.dumps(history.to_json_dict())
    await Replayer(
        workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=WORKFLOW_RUNNER
    ).replay_workflow(history)
    if os.environ.get("RECORD_HISTORIES"):
        record_history("read_only_postgres", history)


async def test_app_flag_rejected_exit_keeps_it_read_only_and_cancel_restores_writes(
    dev_env: WorkflowEnvironment, demo_app: DemoApp, webhook: Receiver, tmp_path: Path
) -> None:
    configure(tmp_path, demo_app, webhook, ttl=1, remind=600)
    queue = f"ro-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(base_url=demo_app.url) as app, build_worker(dev_env.client, queue):
        handle = await start(dev_env, queue, "orders-app")
        await approve(handle, "bob", "enter_read_only")
        exit_gate = await _gate_for(handle, "exit_read_only")  # TTL of 1 s passed
        assert (await app.post("/orders")).status_code == 423
        assert (await app.get("/orders")).status_code == 200
        await handle.execute_update(
            ReadOnlyWorkflow.reject,
            mint("carol", exit_gate, "reject", "not yet"),
        )
        await eventually(lambda: holding(handle))  # back to holding, still read-only
        assert (await app.post("/orders")).status_code == 423
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        report = await handle.query(ReadOnlyWorkflow.report)
        assert report.status == RunStatus.CANCELLED
        assert "writes restored" in report.summary
        assert (await app.post("/orders")).status_code == 201
    events = [n["event"] for n in webhook.received]
    assert "read_only_exit_pending" in events and "read_only_cancelled" in events


async def test_hold_reminds_until_its_ttl_then_opens_the_exit_gate(
    dev_env: WorkflowEnvironment, demo_app: DemoApp, webhook: Receiver, tmp_path: Path
) -> None:
    configure(tmp_path, demo_app, webhook, ttl=4, remind=1)
    queue = f"ro-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start(dev_env, queue, "orders-app", mode="app_flag")
        await approve(handle, "bob", "enter_read_only")
        await approve(handle, "carol", "exit_read_only")
        report = await handle.result()
    assert report.status == RunStatus.REMEDIATED, report.summary
    reminders = [n for n in webhook.received if n["event"] == "read_only_reminder"]
    assert len(reminders) >= 2
    assert "hold_expired" in [s.kind for s in report.steps]


async def test_bad_mode_and_unknown_phase_change_nothing(
    dev_env: WorkflowEnvironment, demo_app: DemoApp, webhook: Receiver, tmp_path: Path
) -> None:
    configure(tmp_path, demo_app, webhook)
    queue = f"ro-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        wrong_mode = await start(dev_env, queue, "orders-app", mode="postgres")
        assert "not available" in (await wrong_mode.result()).summary
        wrong_phase = await start(dev_env, queue, "orders-app", phase="sideways")
        report = await wrong_phase.result()
    assert report.status == RunStatus.ABORTED and "phase='sideways'" in report.summary
