"""rollback end to end: a real Temporal dev server, a demo app of its own over HTTP whose health
follows the release that serves it, and the deploy platforms' fakes (Vercel, Railway, generic)
as real HTTP servers speaking their documented shapes.

Every scenario runs against every platform: happy path, nothing to roll back to, already
rolled back, a 429 storm, a rollback the platform fails, and a verification that fails.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.safety import SafetyQuery, SafetyStatus, safety_workflow_id
from infra.fakes.platforms import GENERIC, RAILWAY, VERCEL, Platform, Release
from infra.local_postgres import free_port
from infra.processes import server_process
from tests.support import (
    BIN,
    OrdersDatabase,
    eventually,
    mint,
    record_history,
    start_signed,
    write_config,
)
from workers.worker import WORKFLOW_RUNNER, WORKFLOWS, build_worker
from workflows.models import GateView, RunbookInput, RunReport, RunStatus
from workflows.rollback import RollbackWorkflow

Handle = WorkflowHandle[Any, RunReport]

CONFIG = """
[targets.web]
kind = "http"
health_url = "{app}/health"
probe_urls = ["{app}/orders"]
metrics_url = "{app}/metrics"

[targets.web.deploy]
{deploy}

[runbooks.rollback]
probe_rounds = 3
probe_interval_seconds = 0.2
down_rounds = 2
verify_consecutive = 2
verify_interval_seconds = 0.3
verify_deadline_seconds = 4
max_error_rate = 0.05
rollback_deadline_seconds = 20

[runbooks.rollback.gate]
required_group = "engineering-leads"
"""

AUTO = """
[runbooks.rollback.gate.auto_approve]
name = "rollback-to-last-good"
actions = ["rollback_deployment"]
max_affected = 1
allow_whole_target = true
"""


@dataclass
class Web:
    """The demo app as the service under rollback, with its own process and state."""

    url: str


@pytest.fixture(scope="module")
def web(orders_db: OrdersDatabase) -> Iterator[Web]:
    port = free_port()
    env = {**os.environ, "DEMO_DATABASE_URL": orders_db.app_dsn, "DEMO_ADMIN_TOKEN": "web-admin"}
    command = [str(BIN / "uvicorn"), "infra.demo_app:app", "--port", str(port)]
    with server_process([*command, "--log-level", "warning"], port, env):
        yield Web(url=f"http://127.0.0.1:{port}")


@pytest.fixture(scope="module", params=[GENERIC, VERCEL, RAILWAY], ids=lambda p: p.name)
def platform(request: pytest.FixtureRequest) -> Iterator[Platform]:
    spec: Platform = request.param
    port = free_port()
    command = [sys.executable, "-m", spec.module, "--port", str(port)]
    with server_process(command, port, quiet=True):
        yield spec.at(f"http://127.0.0.1:{port}")


def configure(tmp_path: Path, web: Web, platform: Platform, auto: bool = False) -> None:
    os.environ[platform.token_env] = platform.token
    body = CONFIG.format(app=web.url, deploy=platform.deploy_toml()) + (AUTO if auto else "")
    write_config(tmp_path, body)


async def start(env: WorkflowEnvironment, queue: str, **params: str) -> Handle:
    return await start_signed(
        env.client,
        RollbackWorkflow.run,
        RunbookInput(target="web", requested_by="alice", parameters=params),
        id=f"rollback-web-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
    )


async def open_gate(handle: Handle) -> GateView:
    async def probe() -> GateView | None:
        return await handle.query(RollbackWorkflow.pending_gate)

    return await eventually(probe, 30)


async def approve(handle: Handle, who: str = "bob") -> GateView:
    gate = await open_gate(handle)
    await handle.execute_update(RollbackWorkflow.approve, mint(who, gate, "approve"))
    return gate


def history(
    bad_newest: int = 1, count: int = 5, newest_age: timedelta = timedelta(minutes=10)
) -> list[Release]:
    """`count` releases an hour apart, the newest `newest_age` old (recent: the outage follows
    its deploy) and serving; the newest `bad_newest` broken."""
    newest = datetime.now(UTC).replace(microsecond=0) - newest_age
    return [
        Release.numbered(i, count, healthy=i < count - bad_newest).model_copy(
            update={"created_at": newest - timedelta(hours=count - 1 - i)}
        )
        for i in range(count)
    ]


async def test_happy_path_rolls_back_to_the_last_good_release_after_approval(
    dev_env: WorkflowEnvironment, web: Web, platform: Platform, tmp_path: Path
) -> None:
    configure(tmp_path, web, platform)
    releases = history(bad_newest=2, count=6)  # rel-005 serves broken; rel-004's build failed
    releases[4] = releases[4].model_copy(update={"failed": True})
    await platform.scenario(releases, current="rel-005", on_switch=f"{web.url}/debug/release")
    queue = f"rb-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start(dev_env, queue)
        gate = await approve(handle)
        report = await handle.result()
    assert gate.plan.parameters["from"]["id"] == platform.id_of("rel-005")
    assert gate.plan.parameters["to"]["id"] == platform.id_of("rel-003")
    assert report.status == RunStatus.REMEDIATED, report.summary
    assert list(report.timeline) == ["triggered", "detected", "approved", "rolled_back", "verified"]
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{web.url}/health")).status_code == 200
    recorded = await handle.fetch_history()
    assert platform.token not in json.dumps(recorded.to_json_dict())
    await Replayer(
        workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=WORKFLOW_RUNNER
    ).replay_workflow(recorded)
    if os.environ.get("RECORD_HISTORIES") and platform.name == "vercel":
        record_history(f"rollback_{platform.name}", recorded)


async def test_nothing_to_roll_back_to_escalates_without_acting(
    dev_env: WorkflowEnvironment, web: Web, platform: Platform, tmp_path: Path
) -> None:
    configure(tmp_path, web, platform)
    releases = history(bad_newest=1, count=3)  # rel-002 serves broken; every build before failed
    releases[0] = releases[0].model_copy(update={"failed": True})
    releases[1] = releases[1].model_copy(update={"failed": True})
    await platform.scenario(releases, current="rel-002", on_switch=f"{web.url}/debug/release")
    queue = f"rb-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        report = await (await start(dev_env, queue)).result()
    assert report.status == RunStatus.ESCALATED
    assert "no known-good release" in report.summary
    assert not await platform.rollbacks_requested()


async def test_a_healthy_service_is_not_rolled_back(
    dev_env: WorkflowEnvironment, web: Web, platform: Platform, tmp_path: Path
) -> None:
    configure(tmp_path, web, platform)
    await platform.scenario(
        history(bad_newest=0), current="rel-004", on_switch=f"{web.url}/debug/release"
    )
    queue = f"rb-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        report = await (await start(dev_env, queue)).result()
    assert report.status == RunStatus.NO_ACTION_NEEDED, report.summary
    assert not await platform.rollbacks_requested()


async def test_already_rolled_back_by_hand_is_not_rolled_back_again(
    dev_env: WorkflowEnvironment, web: Web, platform: Platform, tmp_path: Path
) -> None:
    configure(tmp_path, web, platform)
    await platform.scenario(history(), current="rel-004", on_switch=f"{web.url}/debug/release")
    queue = f"rb-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start(dev_env, queue)

        gate = await open_gate(handle)
        await platform.roll_back_by_hand(gate.plan.parameters["to"]["id"])  # someone was faster
        before = await platform.rollbacks_requested()
        await handle.execute_update(RollbackWorkflow.approve, mint("bob", gate, "approve"))
        report = await handle.result()
    assert report.status == RunStatus.REMEDIATED, report.summary
    assert await platform.rollbacks_requested() == before
    assert any("nothing done" in s.summary for s in report.steps if s.kind == "action")


async def test_a_hotfix_deployed_while_the_gate_waits_is_not_rolled_back(
    dev_env: WorkflowEnvironment, web: Web, platform: Platform, tmp_path: Path
) -> None:
    """Issue 13, scenario 1: the plan was "rel-004 -> rel-003"; meanwhile a good rel-005 went
    out and production is healthy. The approved plan is stale: nothing is switched, the run
    diagnoses again and finds nothing to do."""
    configure(tmp_path, web, platform)
    releases = history()
    await platform.scenario(releases, current="rel-004", on_switch=f"{web.url}/debug/release")
    queue = f"rb-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start(dev_env, queue)

        gate = await open_gate(handle)
        assert gate.plan.parameters["from"]["id"] == platform.id_of("rel-004")
        just_now = datetime.now(UTC).replace(microsecond=0)
        hotfix = [*releases, Release.numbered(5, 6).model_copy(update={"created_at": just_now})]
        await platform.scenario(hotfix, current="rel-005", on_switch=f"{web.url}/debug/release")
        await handle.execute_update(RollbackWorkflow.approve, mint("bob", gate, "approve"))
        report = await handle.result()
    assert report.status == RunStatus.NO_ACTION_NEEDED, report.summary
    assert await platform.rollbacks_requested() == 0
    assert await platform.serving() == "rel-005"
    drift = next(s for s in report.steps if s.kind == "plan_drift")
    assert "production now serves" in drift.summary and "nothing was switched" in drift.summary


async def test_a_429_storm_is_waited_out_with_retry_after(
    dev_env: WorkflowEnvironment, web: Web, platform: Platform, tmp_path: Path
) -> None:
    configure(tmp_path, web, platform, auto=True)
    await platform.scenario(
        history(), current="rel-004", on_switch=f"{web.url}/debug/release", rate_limit_next=5
    )
    queue = f"rb-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        report = await (await start(dev_env, queue)).result()
    assert report.status == RunStatus.REMEDIATED, report.summary
    assert await platform.rate_limit_left() == 0


async def test_a_rollback_the_platform_fails_escalates(
    dev_env: WorkflowEnvironment, web: Web, platform: Platform, tmp_path: Path
) -> None:
    configure(tmp_path, web, platform, auto=True)
    await platform.scenario(
        history(), current="rel-004", on_switch=f"{web.url}/debug/release", fail_next_rollback=True
    )
    queue = f"rb-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        report = await (await start(dev_env, queue)).result()
    assert report.status == RunStatus.ESCALATED
    assert "failed" in report.summary and platform.id_of("rel-003") in report.summary


async def test_failed_verification_rolls_forward_when_asked_and_escalates(
    dev_env: WorkflowEnvironment, web: Web, platform: Platform, tmp_path: Path
) -> None:
    configure(tmp_path, web, platform, auto=True)
    releases = history(bad_newest=5)  # the "good" one is broken too: the fault is elsewhere
    await platform.scenario(releases, current="rel-004", on_switch=f"{web.url}/debug/release")
    queue = f"rb-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start(dev_env, queue, roll_forward_on_failure="true")
        report = await handle.result()
    assert report.status == RunStatus.ESCALATED
    assert "rolled forward" in report.summary
    assert await platform.serving() == "rel-004"
    assert "compensation" in [s.kind for s in report.steps]


async def test_a_rollback_cancelled_while_verifying_releases_its_lease_and_pages(
    dev_env: WorkflowEnvironment, web: Web, platform: Platform, tmp_path: Path
) -> None:
    """Cancelled mid-act (rolled back, verifying): what was done stays done, nothing further
    happens, the run says so and pages, and the target's lease is free again."""
    configure(tmp_path, web, platform, auto=True)
    releases = history(bad_newest=5)  # verification keeps failing: the run stays in it
    await platform.scenario(releases, current="rel-004", on_switch=f"{web.url}/debug/release")
    queue = f"rb-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start(dev_env, queue, roll_forward_on_failure="true")

        async def verifying() -> bool:
            report = await handle.query(RollbackWorkflow.report)
            return report.status == RunStatus.VERIFYING

        await eventually(verifying, 30)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        report = await handle.query(RollbackWorkflow.report)
        envelope = dev_env.client.get_workflow_handle(safety_workflow_id(queue))
        status = await envelope.query(
            "status", SafetyQuery(target="web", runbook="rollback"), result_type=SafetyStatus
        )
    assert report.status == RunStatus.CANCELLED, report.summary
    assert "cancelled while Verifying" in report.summary
    assert "compensation" not in [s.kind for s in report.steps], "not rolled forward"
    assert await platform.serving() == "rel-003"
    assert status.holder is None
