"""The `remediate` CLI as a user runs it: a subprocess against a real dev server, with the
worker running and a real Postgres target."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from tests.support import TOKENS, DemoApp, OrdersDatabase, Sessions, eventually, write_config
from workers.worker import build_worker
from workflows.models import RunReport, RunStatus

CLI = str(Path(sys.executable).parent / "remediate")
WORKFLOW_ID = "pool_restart-orders-db"
CONFIG = """
[targets.orders-db]
kind = "postgres"
dsn = {{ env = "ORDERS_DB_DSN_CLI" }}
health_url = "{app}/health"

[runbooks.pool_restart]
usage_threshold = 0.2
idle_older_than_seconds = 1
verify_consecutive = 1
verify_interval_seconds = 0.5
"""


class Cli:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    async def __call__(self, *args: str, who: str = "alice") -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            CLI,
            *args,
            env={**self.env, "REMEDIATE_TOKEN": TOKENS.get(who, who)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    async def json(self, *args: str) -> Any:
        code, out, err = await self(*args, "--json")
        assert code == 0, err
        return json.loads(out)


@asynccontextmanager
async def serving(env: WorkflowEnvironment, cli: Cli) -> AsyncIterator[None]:
    """A worker on the CLI's task queue. The tests share the CLI's deterministic workflow
    id, so none may leave its run behind."""
    async with build_worker(env.client, cli.env["REMEDIATE_TASK_QUEUE"]):
        try:
            yield
        finally:
            with suppress(RPCError):
                await env.client.get_workflow_handle(WORKFLOW_ID).terminate("test cleanup")


@pytest.fixture
def cli(
    dev_env: WorkflowEnvironment, orders_db: OrdersDatabase, demo_app: DemoApp, tmp_path: Path
) -> Cli:
    os.environ["ORDERS_DB_DSN_CLI"] = orders_db.admin_dsn
    config = write_config(tmp_path, CONFIG.format(app=demo_app.url))
    return Cli(
        {
            **os.environ,
            "REMEDIATE_CONFIG": str(config),
            "REMEDIATE_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "REMEDIATE_TASK_QUEUE": f"cli-{uuid.uuid4().hex[:6]}",
        }
    )


async def test_start_pending_approve_status_list(
    dev_env: WorkflowEnvironment, cli: Cli, sessions: Sessions
) -> None:
    stale = sessions.open_idle(30)
    await asyncio.sleep(1.5)
    async with serving(dev_env, cli):
        code, out, err = await cli("start", "pool_restart", "--target", "orders-db")
        assert code == 0, err
        workflow_id = out.strip()
        assert workflow_id == WORKFLOW_ID
        code, out, _ = await cli("start", "pool_restart", "--target", "orders-db")
        assert out.strip() == workflow_id  # a second start attaches to the running one

        async def listed() -> list[dict[str, Any]]:
            gates: list[dict[str, Any]] = await cli.json("pending")
            return [g for g in gates if g["workflow_id"] == workflow_id]

        [gate] = await eventually(listed, seconds=30, every=0.5)
        assert gate["plan"]["expected_impact"]["affected"] == len(stale)
        assert gate["requested_by"] == "alice"

        code, _, err = await cli("approve", workflow_id, who="alice")
        assert code == 2 and "not in the required group" in err
        code, out, err = await cli("approve", workflow_id, "--reason", "stale", who="bob")
        assert code == 0, err
        assert f"approved plan {gate['plan']['plan_id']}" in out

        async def finished() -> dict[str, Any] | None:
            status: dict[str, Any] = await cli.json("status", workflow_id)
            return status if status["finished_at"] else None

        report = await eventually(finished, seconds=60, every=0.5)
        assert report["status"] == "Remediated"
        kinds = [s["kind"] for s in report["steps"]]
        assert kinds.count("decision_refused") == 1 and "gate_approved" in kinds
        assert sessions.alive(stale) == set()

        async def in_list() -> bool:
            runs: list[dict[str, Any]] = await cli.json("list")
            return any(r["workflow_id"] == workflow_id and r["status"] for r in runs)

        await eventually(in_list, seconds=30, every=0.5)
        code, out, _ = await cli("status", workflow_id)
        assert "Remediated" in out and "gate_approved" in out


async def test_reject_from_the_cli(
    dev_env: WorkflowEnvironment, cli: Cli, sessions: Sessions
) -> None:
    stale = sessions.open_idle(30)
    await asyncio.sleep(1.5)
    async with serving(dev_env, cli):
        code, out, err = await cli("start", "pool_restart", "--target", "orders-db")
        workflow_id = out.strip()

        async def gate_open() -> bool:
            status: dict[str, Any] = await cli.json("status", workflow_id)
            return bool(status["status"] == "AwaitingApproval")

        await eventually(gate_open, seconds=30, every=0.5)
        code, _, err = await cli("reject", workflow_id, who="bob")
        assert code == 2 and "--reason" in err  # a rejection must say why
        code, _, err = await cli("reject", workflow_id, "--reason", "not now", who="bob")
        assert code == 0, err
        result = await dev_env.client.get_workflow_handle(workflow_id).result()
        assert result["status"] == "Rejected"
        assert sessions.alive(stale) == set(stale)


@pytest.mark.parametrize(
    ("args", "who", "message"),
    [
        (("start", "pool_restart", "--target", "nope"), "alice", "unknown target 'nope'"),
        (("start", "restart_everything", "--target", "orders-db"), "alice", "unknown runbook"),
        (("start", "pool_restart", "--target", "orders-db"), "forged", "matches no identity"),
        (("approve", "pool_restart-nothing-here"), "bob", "no remediation"),
    ],
)
async def test_bad_input_is_a_clear_error_and_starts_nothing(
    cli: Cli, args: tuple[str, ...], who: str, message: str
) -> None:
    code, out, err = await cli(*args, who=who)
    assert code != 0 and out == ""
    assert message in err


async def test_kill_switch_from_the_cli(dev_env: WorkflowEnvironment, cli: Cli) -> None:
    async with serving(dev_env, cli):
        code, out, err = await cli("pause", "--reason", "incident review", who="alice")
        assert code == 0, err
        assert "paused by alice" in out
        code, _, err = await cli("resume", who="alice")
        assert code == 2 and "not in engineering-leads" in err
        code, out, err = await cli("resume", who="bob")
        assert code == 0 and "resumed by bob" in out, err


async def test_manual_start_with_the_temporal_cli_and_the_readme_input(
    dev_env: WorkflowEnvironment, cli: Cli, sessions: Sessions
) -> None:
    """The README's copy-paste input, through `temporal workflow start` (what the UI's
    Start Workflow sends too)."""
    stale = sessions.open_idle(30)
    await asyncio.sleep(1.5)
    async with serving(dev_env, cli):
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "temporal"),
            *("workflow", "start", "--address", cli.env["REMEDIATE_TEMPORAL_ADDRESS"]),
            *("--type", "PoolRestartWorkflow", "--task-queue", cli.env["REMEDIATE_TASK_QUEUE"]),
            *("--workflow-id", WORKFLOW_ID),
            *("--input", '{"target": "orders-db", "requested_by": "alice", "dry_run": true}'),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        report: RunReport = await dev_env.client.get_workflow_handle(
            WORKFLOW_ID, result_type=RunReport
        ).result()
    assert report.status == RunStatus.DRY_RUN and report.requested_by == "alice"
    assert "would terminate_idle_sessions" in report.summary
    assert sessions.alive(stale) == set(stale)
