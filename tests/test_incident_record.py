"""The incident record of real runs (a real dev server, Postgres, the demo app, the deploy
platform's fake, moto's S3): a pool_restart approved after a refused decision, a rollback, a
restore with its data-loss window; the record posted at the run's end with the run page's
link; `remediate report` and GET /runs/{id}/report as a user gets them."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from infra.fakes.platforms import GENERIC, Platform
from infra.local_postgres import PostgresServer, free_port
from infra.processes import server_process
from tests.support import (
    TOKENS,
    DemoApp,
    OrdersDatabase,
    Receiver,
    Sessions,
    mint,
    start_signed,
    wait_for_gate,
    write_config,
)
from tests.test_backup_restore import approve_gates as approve_restore_gates
from tests.test_backup_restore import aws, corrupt, create_shop, take_backup
from tests.test_backup_restore import configure as configure_restore
from tests.test_backup_restore import start as start_restore
from tests.test_rollback import approve as approve_rollback
from tests.test_rollback import configure as configure_rollback
from tests.test_rollback import history, web
from tests.test_rollback import start as start_rollback
from workers.team_stats import TeamStats
from workers.worker import WORKFLOW_RUNNER, WORKFLOWS, build_worker
from workflows.incident_causes import span
from workflows.incident_markdown import render_json, render_markdown
from workflows.incident_models import IncidentRecord
from workflows.incident_record import incident_record
from workflows.models import AlertContext, RunbookInput, RunReport, RunStatus
from workflows.pool_restart import PoolRestartWorkflow

__all__ = ["aws", "web"]  # fixtures shared with the runbooks' own tests

CLI = str(Path(sys.executable).parent / "remediate")
PAGES = "https://remediate.example.com"
SECTIONS = (
    "## Summary",
    "## Timeline (UTC)",
    "## Impact",
    "## Root Cause",
    "## Resolution",
    "## Decisions and Refusals",
    "## Follow-ups",
)
POOL_CONFIG = """
[targets.orders-db]
kind = "postgres"
dsn = {{ env = "ORDERS_DB_DSN_REPORT" }}
health_url = "{app}/health"

[runbooks.pool_restart]
usage_threshold = {threshold}
idle_older_than_seconds = 2
verify_consecutive = 1
verify_interval_seconds = 0.3
verify_deadline_seconds = 30

[runbooks.pool_restart.gate]
required_group = "engineering-leads"

[notify]
webhook_url = "{webhook}"

[pages]
public_url = "{pages}"
"""


def configure_pool(
    tmp_path: Path,
    orders_db: OrdersDatabase,
    demo_app: DemoApp,
    webhook: Receiver,
    threshold: float = 0.25,
) -> Path:
    os.environ["ORDERS_DB_DSN_REPORT"] = orders_db.admin_dsn
    hook = f"http://127.0.0.1:{webhook.server_address[1]}/hook"
    return write_config(
        tmp_path,
        POOL_CONFIG.format(app=demo_app.url, threshold=threshold, webhook=hook, pages=PAGES),
    )


async def start_pool(
    env: WorkflowEnvironment, queue: str, alert: AlertContext | None = None
) -> WorkflowHandle[Any, RunReport]:
    return await start_signed(
        env.client,
        PoolRestartWorkflow.run,
        RunbookInput(
            target="orders-db", requested_by="alice", reason="Too many connections", alert=alert
        ),
        id=f"pool_restart-orders-db-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
        result_type=RunReport,
    )


def assert_sections(markdown: str) -> None:
    positions = [markdown.index(section) for section in SECTIONS]
    assert positions == sorted(positions), "the template's order"
    assert markdown.startswith("# Incident: ")


async def test_pool_restart_record_names_approver_action_verification_refusal_and_leak(
    dev_env: WorkflowEnvironment,
    orders_db: OrdersDatabase,
    demo_app: DemoApp,
    sessions: Sessions,
    webhook: Receiver,
    tmp_path: Path,
) -> None:
    configure_pool(tmp_path, orders_db, demo_app, webhook)
    fired = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    alert = AlertContext(
        source="alertmanager",
        name="PostgresTooManyConnections",
        fingerprint="fp-orders-db",
        labels={"severity": "critical", "runbook": "pool_restart"},
        summary="orders-db connections above 25%",
        starts_at=fired,
    )
    sessions.open_idle(30)
    await asyncio.sleep(2.5)  # idle longer than idle_older_than_seconds
    queue = f"rep-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start_pool(dev_env, queue, alert)
        gate = await wait_for_gate(handle)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(
                PoolRestartWorkflow.approve, mint("mallory", gate, "approve")
            )
        await handle.execute_update(
            PoolRestartWorkflow.approve, mint("bob", gate, "approve", "stale idle sessions")
        )
        report = await handle.result()
        history = await handle.fetch_history()
    assert report.status == RunStatus.REMEDIATED, report.summary
    # The record's notification is behind its patch: this history replays.
    await Replayer(
        workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=WORKFLOW_RUNNER
    ).replay_workflow(history)

    record = incident_record(report)
    markdown = render_markdown(record)
    assert_sections(markdown)
    assert "**Severity:** critical (from the alert)" in markdown
    assert f"- {fired:%H:%M:%S} - alert fired: alertmanager PostgresTooManyConnections" in markdown
    assert "run started: pool_restart on orders-db requested by alice" in markdown
    assert "gate opened: awaiting approval from engineering-leads" in markdown
    assert "**approved by bob** after " in markdown and '"stale idle sessions"' in markdown
    assert "action: terminated 30 sessions" in markdown
    assert "verified: verification passed" in markdown
    assert "mallory is not in the required group engineering-leads" in markdown
    assert (
        "- [ ] Investigate the connection leak in orders-api: it held 30 of the 30 sessions "
        "left idle for more than 2 s" in markdown
    )
    assert "connections by application: orders-api " in markdown
    assert record.participants == ["alice", "bob", "mallory"]
    assert record.impact.outage_started_at == fired
    assert record.impact.outage_ended_at == next(
        s.at for s in report.steps if s.kind == "verification_passed"
    )
    assert record.impact.data_loss is None and "**Data loss:** none" in markdown

    # JSON: the model itself, every section a field.
    data = json.loads(render_json(record))
    assert IncidentRecord.model_validate(data) == record
    assert data["severity"] == "critical" and data["severity_from"] == "alert"
    [approved] = [d for d in data["decisions"] if d["outcome"] == "approved"]
    assert approved["decided_by"] == "bob" and approved["waited_seconds"] > 0
    assert approved["plan"].startswith("terminate_idle_sessions on orders-db")
    assert [r["kind"] for r in data["refusals"]] == ["decision_refused"]
    assert {e["kind"] for e in data["timeline"]} >= {
        "alert_fired", "started", "gate_opened", "gate_approved", "action",
        "verification_passed", "finished",
    }  # fmt: skip

    # Posted at the end through the notification path, with the run page's link.
    [posted] = [n for n in webhook.received if n["event"] == "incident_record"]
    link = f"{PAGES}/ui/runs/{handle.id}"
    assert posted["details"]["run_page"] == link
    assert posted["message"].endswith(f"Run page: {link}\n")
    assert "Investigate the connection leak in orders-api" in posted["message"]
    assert posted["severity"] == "info" and posted["details"]["severity"] == "critical"
    assert len(posted["message"]) < 3600


@pytest.fixture(scope="module")
def generic_platform() -> Iterator[Platform]:
    port = free_port()
    command = [sys.executable, "-m", GENERIC.module, "--port", str(port)]
    with server_process(command, port, quiet=True):
        yield GENERIC.at(f"http://127.0.0.1:{port}")


async def test_rollback_record_names_the_bad_release_and_what_to_fix(
    dev_env: WorkflowEnvironment, web: Any, generic_platform: Platform, tmp_path: Path
) -> None:
    configure_rollback(tmp_path, web, generic_platform)
    await generic_platform.scenario(
        history(bad_newest=1, count=4), current="rel-003", on_switch=f"{web.url}/debug/release"
    )
    queue = f"rep-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start_rollback(dev_env, queue)
        await approve_rollback(handle, "carol")
        report = await handle.result()
    assert report.status == RunStatus.REMEDIATED, report.summary

    record = incident_record(report)
    markdown = render_markdown(record)
    assert_sections(markdown)
    assert "**Severity:** medium (from the outcome)" in markdown  # a manual run: no alert
    assert "**approved by carol**" in markdown
    assert "action: rolled back to rel-002" in markdown
    assert "verified: verification passed" in markdown
    assert record.root_cause[0].startswith("release rel-003")
    assert "was serving production when web went down" in record.root_cause[0]
    assert any("outage follows a deploy" in line for line in record.root_cause)
    [follow_up] = record.follow_ups
    assert follow_up.startswith("Find and fix what broke in release rel-003")
    assert follow_up.endswith("production serves rel-002 until then")
    # The outage began when the run found it down (the rollback's own judgement).
    assert record.impact.outage_started_at == report.timeline["detected"]
    assert record.impact.outage_ended_at == report.timeline["verified"]
    assert "web: fixed and verified, from " in record.impact.observed


async def test_restore_record_gives_the_data_loss_window_and_the_snapshot(
    dev_env: WorkflowEnvironment, postgres: PostgresServer, aws: str, tmp_path: Path
) -> None:
    shop = create_shop(postgres, "shop_report", events=1000)
    configure_restore(tmp_path, shop, aws)
    backup_key = await take_backup("nightly-report")
    await asyncio.sleep(1.1)
    corrupted_at = datetime.now(UTC)
    corrupt(shop)
    queue = f"rep-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start_restore(dev_env, queue, before=corrupted_at.isoformat())
        await approve_restore_gates(dev_env, handle.id, ["bob", "carol", "bob"])
        report = await asyncio.wait_for(handle.result(), 300)
    assert report.status == RunStatus.REMEDIATED, report.summary

    record = incident_record(report)
    loss = record.impact.data_loss
    assert loss is not None and loss.applied
    assert loss.backup.endswith(backup_key)
    assert loss.writes_stopped_at == report.timeline["writes_stopped"]
    expected = int((report.timeline["writes_stopped"] - loss.backup_taken_at).total_seconds())
    assert loss.seconds == expected and expected >= 1
    assert loss.safety_snapshot.startswith(f"s3://{aws}/")

    markdown = render_markdown(record)
    assert_sections(markdown)
    assert f"- **Data-loss window:** {span(loss.seconds)}: writes between " in markdown
    assert f"kept in the safety snapshot {loss.safety_snapshot}" in markdown
    assert "**approved by carol**" in markdown  # the restore's own gate (the children: bob)
    assert "action: restored into shop_report_restore_" in markdown
    assert any(
        f.startswith("Recover the writes of the data-loss window (")
        and f.endswith(f"from the safety snapshot {loss.safety_snapshot} if any are needed")
        for f in record.follow_ups
    )
    assert not any("Drop the replaced database" in f for f in record.follow_ups)  # dropped
    # What the restore cost: writes were off from the read-only entry to its exit.
    assert record.impact.outage_started_at == report.timeline["writes_stopped"]
    exited = next(s.at for s in report.steps if s.kind == "read_only_exit")
    assert record.impact.outage_ended_at == exited
    assert record.impact.observed.startswith("shop-db: writes were off (read-only) while")


async def test_report_from_the_cli_and_over_http(
    dev_env: WorkflowEnvironment,
    orders_db: OrdersDatabase,
    demo_app: DemoApp,
    webhook: Receiver,
    tmp_path: Path,
) -> None:
    config = configure_pool(tmp_path, orders_db, demo_app, webhook, threshold=0.99)
    queue = f"rep-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start_pool(dev_env, queue)
        report = await handle.result()
    assert report.status == RunStatus.NO_ACTION_NEEDED

    port = free_port()
    env = {
        **os.environ,
        "REMEDIATE_CONFIG": str(config),
        "REMEDIATE_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "REMEDIATE_API_PORT": str(port),
    }

    async def cli(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            CLI, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await process.communicate()
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    code, out, err = await cli("report", handle.id)
    assert code == 0, err
    assert_sections(out)
    assert f"[run page]({PAGES}/ui/runs/{handle.id})" in out
    assert "the run found nothing to act on: no action needed" in out
    code, out, err = await cli("report", handle.id, "--format", "json")
    assert code == 0, err
    assert IncidentRecord.model_validate_json(out).status == RunStatus.NO_ACTION_NEEDED
    code, out, err = await cli("report", "pool_restart-no-such-target")
    assert (code, out) == (2, "")
    assert err.strip() == "error: no remediation 'pool_restart-no-such-target'"
    code, _, err = await cli("report", handle.id, "--format", "pdf")
    assert code == 2 and "'pdf' is not one of 'md', 'json'" in err

    bob = {"Authorization": f"Bearer {TOKENS['bob']}"}
    with server_process([sys.executable, "-m", "workers.service"], port, env):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            path = f"/runs/{handle.id}/report"
            unauthenticated = await http.get(path)
            assert unauthenticated.status_code == 401
            assert "Bearer" in unauthenticated.json()["error"]
            wrong = await http.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401

            as_json = await http.get(path, headers=bob)
            assert as_json.status_code == 200
            record = IncidentRecord.model_validate(as_json.json())
            assert record.workflow_id == handle.id
            assert record.run_page == f"{PAGES}/ui/runs/{handle.id}"
            as_md = await http.get(path, params={"format": "md"}, headers=bob)
            assert as_md.headers["content-type"].startswith("text/markdown")
            assert_sections(as_md.text)

            unknown = await http.get("/runs/pool_restart-no-such-target/report", headers=bob)
            assert unknown.status_code == 404
            assert unknown.json() == {"error": "no remediation 'pool_restart-no-such-target'"}
            bad_format = await http.get(path, params={"format": "pdf"}, headers=bob)
            assert bad_format.status_code == 422 and "format" in bad_format.json()["error"]

            # The team's numbers: the same guard, the same errors.
            assert (await http.get("/stats")).status_code == 401
            numbers = await http.get("/stats", params={"since": "1h"}, headers=bob)
            assert numbers.status_code == 200
            assert TeamStats.model_validate(numbers.json()).runs >= 1
            as_md = await http.get("/stats", params={"format": "md"}, headers=bob)
            assert as_md.text.startswith("# Runs started ") and "## pool_restart" in as_md.text
            bad_since = await http.get("/stats", params={"since": "forever"}, headers=bob)
            assert bad_since.status_code == 422
            assert "since='forever' is neither a duration" in bad_since.json()["error"]
            unknown_runbook = await http.get("/stats", params={"runbook": "nope"}, headers=bob)
            assert unknown_runbook.status_code == 404
