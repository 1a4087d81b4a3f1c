"""The `remediate` CLI as a user runs it: a subprocess against a real dev server, with the
worker running and a real Postgres target."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from infra.local_postgres import free_port
from infra.processes import server_process
from tests.support import (
    SIGNING_KEY_ENV,
    TOKENS,
    DemoApp,
    OrdersDatabase,
    Sessions,
    eventually,
    fresh_namespace,
    write_config,
)
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

    async def __call__(
        self, *args: str, who: str = "alice", env: dict[str, str] | None = None
    ) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            CLI,
            *args,
            env={**self.env, "REMEDIATE_TOKEN": TOKENS.get(who, who), **(env or {})},
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
) -> Iterator[Cli]:
    """The CLI as a user has it: pointed at a running approval service (which alone signs)
    and at Temporal for reading runs."""
    os.environ["ORDERS_DB_DSN_CLI"] = orders_db.admin_dsn
    config = write_config(tmp_path, CONFIG.format(app=demo_app.url))
    port = free_port()
    env = {
        **os.environ,
        "REMEDIATE_CONFIG": str(config),
        "REMEDIATE_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "REMEDIATE_TASK_QUEUE": f"cli-{uuid.uuid4().hex[:6]}",
        "REMEDIATE_API_PORT": str(port),
        "REMEDIATE_API_URL": f"http://127.0.0.1:{port}",
    }
    with server_process([sys.executable, "-m", "workers.service"], port, env):
        yield Cli(env)


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
        code, out, err = await cli("resume", "--reason", "review done", who="bob")
        assert code == 0 and "resumed by bob" in out, err
        # Who paused and resumed is on record, in the envelope.
        envelope = f"remediation-safety-{cli.env['REMEDIATE_TASK_QUEUE']}"
        code, out, err = await cli("status", envelope)
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0] == f"{envelope}: running (not paused)"
        assert [line.split()[1:] for line in lines[1:]] == [
            ["paused", "alice", "incident", "review"],
            ["resumed", "bob", "review", "done"],
        ]


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


# -- user errors: one line, exit 2 -------------------------------------------------------

NO_RUN = "pool_restart-nothing-here"
UNREACHABLE = "127.0.0.1:{port}"  # a free port: nothing listens there


@pytest.mark.parametrize(
    ("args", "env", "who", "message"),
    [
        (("start", "pool_restart", "--target", "nope"), {}, "alice",
         "unknown target 'nope': add it under [targets.nope] (known: orders-db)"),
        (("start", "restart_everything", "--target", "orders-db"), {}, "alice",
         "unknown runbook 'restart_everything'; known: pool_restart, "),
        (("start", "pool_restart", "--target", "orders-db", "--param", "usage"), {}, "alice",
         "--param takes key=value, not 'usage'"),
        (("start", "pool_restart", "--target", "orders-db"), {}, "forged",
         "the token matches no identity in the config; check REMEDIATE_TOKEN"),
        (("pause", "--reason", "drill"), {}, "forged", "the token matches no identity"),
        (("start", "pool_restart", "--target", "orders-db"), {}, "",
         "no credential: set REMEDIATE_TOKEN or pass --token-file"),
        (("approve", NO_RUN, "--token-file", "/nonexistent/token"), {}, "bob",
         "cannot read --token-file /nonexistent/token: No such file or directory"),
        (("approve", NO_RUN), {}, "bob",
         f"no remediation '{NO_RUN}'; `remediate list` shows the runs"),
        (("reject", NO_RUN, "--reason", "no"), {}, "bob", f"no remediation '{NO_RUN}'"),
        (("status", NO_RUN), {}, "bob", f"no remediation '{NO_RUN}'"),
        (("end-hold", NO_RUN), {}, "bob", f"no remediation '{NO_RUN}'"),
        (("approve", NO_RUN, "--wait", "--timeout", "1"), {}, "bob",
         f"no remediation '{NO_RUN}'"),
        (("pending", "--timeout", "5"), {}, "bob", "--timeout goes with --wait"),
        (("approve", NO_RUN), {"REMEDIATE_API_URL": "http://" + UNREACHABLE}, "bob",
         "cannot reach the approval service at http://127.0.0.1:"),
        (("pending",), {"REMEDIATE_API_URL": "http://" + UNREACHABLE}, "bob",
         "is remediate-service running there? (REMEDIATE_API_URL)"),
        (("list",), {"TEMPORAL_ADDRESS": UNREACHABLE}, "bob",
         "cannot reach Temporal at 127.0.0.1:"),
        (("status", NO_RUN), {"TEMPORAL_ADDRESS": UNREACHABLE}, "alice",
         "is it running? (set TEMPORAL_ADDRESS)"),
    ],
)  # fmt: skip
async def test_every_user_error_is_one_line_and_exit_2(
    cli: Cli, args: tuple[str, ...], env: dict[str, str], who: str, message: str
) -> None:
    port = str(free_port())
    code, out, err = await cli(*args, who=who, env={k: v.format(port=port) for k, v in env.items()})
    assert (code, out) == (2, ""), err
    # One line, no traceback; --wait says first, on its own line, that it waits.
    [line] = [line for line in err.splitlines() if not line.startswith("waiting up to ")]
    assert line.startswith("error: ") and message in line, err


# -- waiting for the next gate -----------------------------------------------------------

# Two gates on one run: terminate the stale sessions; the usage check (never below 0%) then
# fails for 5 s, and only then pool_restart asks for a second decision, an app restart.
TWO_GATES = """
[targets.orders-db]
kind = "postgres"
dsn = {{ env = "ORDERS_DB_DSN_CLI" }}
health_url = "{app}/health"
restart = {{ url = "{app}/admin/restart", token = {{ env = "DEMO_ADMIN_TOKEN_CLI" }} }}

[runbooks.pool_restart]
usage_threshold = 0.0
idle_older_than_seconds = 1
verify_consecutive = 1
verify_interval_seconds = 0.5
verify_deadline_seconds = 5
"""


@dataclass(frozen=True)
class Gated:
    """The CLI, and a worker, in a namespace of their own: `pending` sees only these runs."""

    cli: Cli
    client: Client


@pytest.fixture
async def gated(
    dev_env: WorkflowEnvironment, cli: Cli, demo_app: DemoApp, tmp_path: Path
) -> AsyncIterator[Gated]:
    os.environ["DEMO_ADMIN_TOKEN_CLI"] = demo_app.admin_token
    config = write_config(tmp_path, TWO_GATES.format(app=demo_app.url))
    namespace = await fresh_namespace(dev_env.client)
    port = free_port()
    env = {
        **cli.env,
        "REMEDIATE_CONFIG": str(config),
        "REMEDIATE_NAMESPACE": namespace,
        "REMEDIATE_API_PORT": str(port),
        "REMEDIATE_API_URL": f"http://127.0.0.1:{port}",
    }
    client = Client(
        dev_env.client.service_client, namespace=namespace, data_converter=pydantic_data_converter
    )
    with server_process([sys.executable, "-m", "workers.service"], port, env):
        async with build_worker(client, env["REMEDIATE_TASK_QUEUE"]):
            try:
                yield Gated(Cli(env), client)
            finally:
                with suppress(RPCError):
                    await client.get_workflow_handle(WORKFLOW_ID).terminate("test cleanup")


async def decisions_of(client: Client) -> list[tuple[str, str]]:
    report: RunReport = await client.get_workflow_handle(
        WORKFLOW_ID, result_type=RunReport
    ).result()
    assert report.status == RunStatus.REJECTED, report.summary
    return [(d.outcome.value, d.decided_by) for d in report.decisions]


async def test_wait_for_each_gate_of_a_two_gate_run(gated: Gated, sessions: Sessions) -> None:
    cli = gated.cli
    stale = sessions.open_idle(3)
    await asyncio.sleep(1.5)
    code, out, err = await cli("start", "pool_restart", "--target", "orders-db")
    assert code == 0, err
    code, out, err = await cli("pending", "--wait", "--timeout", "30", "--json")
    assert code == 0, err
    [gate] = json.loads(out)  # waited for the first gate to open
    assert (
        gate["workflow_id"] == WORKFLOW_ID and gate["plan"]["action"] == "terminate_idle_sessions"
    )

    code, _, err = await cli("approve", WORKFLOW_ID, who="alice")
    assert code == 2
    assert err == "error: decision refused: alice is not in the required group engineering-leads\n"
    code, out, err = await cli("approve", WORKFLOW_ID, "--wait", who="bob")
    assert code == 0, err
    assert out == f"approved plan {gate['plan']['plan_id']} of {WORKFLOW_ID} as bob\n"
    # At once, seconds before the second gate opens: --wait waits for it, then decides it.
    code, out, err = await cli("reject", WORKFLOW_ID, "--wait", "--reason", "not now", who="bob")
    assert code == 0, err
    assert out.startswith("rejected plan ")
    assert err.splitlines() == [
        f"waiting up to 60 s for a gate on {WORKFLOW_ID}",
        f"open gate: plan {out.split()[2]}: restart_app on orders-db: restart the application "
        "to rebuild its connection pool; in-flight requests fail once",
    ]
    assert await decisions_of(gated.client) == [("approved", "bob"), ("rejected", "bob")]
    assert sessions.alive(stale) == set()

    code, out, err = await cli("pending", "--wait", "--timeout", "1")
    assert (code, out) == (1, "none\n")  # documented: none opened in time
    code, out, err = await cli("approve", WORKFLOW_ID, "--wait", "--timeout", "5", who="bob")
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {WORKFLOW_ID} has ended (completed), no gate will open on it")


async def test_approve_wait_says_when_the_run_ends_instead(gated: Gated) -> None:
    """A dry run ends without a gate: the wait stops there, not at its timeout."""
    code, out, err = await gated.cli("start", "pool_restart", "--target", "orders-db", "--dry-run")
    assert code == 0, err
    started = asyncio.get_running_loop().time()
    code, out, err = await gated.cli("approve", WORKFLOW_ID, "--wait", who="bob")
    assert (code, out) == (2, "")
    assert f"error: {WORKFLOW_ID} has ended (completed)" in err and err.count("error:") == 1
    assert asyncio.get_running_loop().time() - started < 30


async def test_pending_names_the_exact_sessions(gated: Gated, sessions: Sessions) -> None:
    stale = sessions.open_idle(3)
    await asyncio.sleep(1.5)
    code, _, err = await gated.cli("start", "pool_restart", "--target", "orders-db")
    assert code == 0, err
    [gate] = await gated.cli.json("pending", "--wait", "--timeout", "30")
    planned = {s["pid"]: s for s in gate["plan"]["parameters"]["sessions"]}
    assert set(stale) <= set(planned) and all(planned[p]["backend_start"] for p in stale)

    code, out, err = await gated.cli("pending", "--details")
    assert code == 0, err
    lines = out.splitlines()
    assert f"    sessions ({len(planned)}):" in lines
    for pid in stale:
        start = planned[pid]["backend_start"]
        assert any(f"pid={pid}  backend_start={start}" in line for line in lines), out
    code, out, _ = await gated.cli("pending")
    assert f"pid={stale[0]}" not in out  # without --details: the summary only


async def test_wait_through_the_approval_service(gated: Gated, sessions: Sessions) -> None:
    """The CLI reads and decides gates over HTTP only: no signing key, no config, and no
    Temporal address of its own."""
    hidden = (SIGNING_KEY_ENV, "REMEDIATE_CONFIG")
    cli = Cli(
        {k: v for k, v in gated.cli.env.items() if k not in hidden}
        | {"REMEDIATE_TEMPORAL_ADDRESS": "-"}
    )
    sessions.open_idle(3)
    await asyncio.sleep(1.5)
    code, _, err = await cli("start", "pool_restart", "--target", "orders-db")
    assert code == 0, err
    [gate] = await cli.json("pending", "--wait", "--timeout", "30")
    code, _, err = await cli("approve", WORKFLOW_ID, who="alice")
    assert code == 2
    assert err == "error: decision refused: alice is not in the required group engineering-leads\n"
    code, out, err = await cli("approve", WORKFLOW_ID, "--wait", who="bob")
    assert out == f"approved plan {gate['plan']['plan_id']} of {WORKFLOW_ID} as bob\n", err
    code, out, err = await cli("reject", WORKFLOW_ID, "--wait", "--reason", "no", who="bob")
    assert code == 0 and out.startswith("rejected plan "), err
    assert err.startswith(f"waiting up to 60 s for a gate on {WORKFLOW_ID}\nopen gate: ")
    assert await decisions_of(gated.client) == [("approved", "bob"), ("rejected", "bob")]
    code, out, err = await cli("pending", "--wait", "--timeout", "1", "--json")
    assert (code, json.loads(out)) == (1, [])


def test_the_cli_starts_without_the_engine_or_the_sdk_client() -> None:
    """Every command imports the CLI; most only call the service. What talks to Temporal, the
    workflows, the service's web stack and the cloud SDKs stay unimported until a command
    needs them (together they made each command take a second to start)."""
    heavy = [
        "workflows.runbook", "workers.approvals", "activities.safety", "temporalio.client",
        "fastapi", "boto3", "psycopg", "cryptography",
    ]  # fmt: skip
    probe = f"import sys, workers.cli; print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]", f"imported by `import workers.cli`: {loaded}"
