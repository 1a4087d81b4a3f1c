"""Duplicates batched by the intake service (workers/coalescer.py): real service processes on a
real dev server. No worker runs unless a test starts one, so what Temporal recorded is read
from the runs' histories (tests/alert_history.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from infra.local_postgres import free_port
from infra.processes import server_process
from tests import payloads
from tests.alert_history import alert_signals, alerts_delivered
from tests.support import eventually, write_config
from workers.worker import build_worker
from workflows.models import RunReport
from workflows.runbook import RunbookWorkflow

TOKEN = "am-" + uuid.uuid4().hex
CONFIG = """
[targets.co-db]
kind = "http"
health_url = "http://127.0.0.1:9/health"

[intake]
alertmanager_tokens = [{ env = "COALESCE_AM_TOKEN" }]

[[routes]]
name = "co-pool"
match = { alertname = "CoalesceStorm" }
runbook = "pool_restart"
target = "co-db"
"""
WORKFLOW_ID = "pool_restart-co-db"


class Services:
    """Service processes sharing one config and task queue, started per test."""

    def __init__(self, dev_env: WorkflowEnvironment, config: Path) -> None:
        self.dev_env = dev_env
        self.config = config
        self.queue = f"coalesce-{uuid.uuid4().hex[:6]}"
        self.stack = contextlib.ExitStack()

    def start(self, window: float, fresh: float = 300) -> str:
        port = free_port()
        env = {
            **os.environ,
            "REMEDIATE_CONFIG": str(self.config),
            "COALESCE_AM_TOKEN": TOKEN,
            "REMEDIATE_TEMPORAL_ADDRESS": self.dev_env.client.service_client.config.target_host,
            "REMEDIATE_TASK_QUEUE": self.queue,
            "REMEDIATE_API_PORT": str(port),
            "REMEDIATE_COALESCE_WINDOW_SECONDS": str(window),
            "REMEDIATE_COALESCE_FRESH_SECONDS": str(fresh),
        }
        command = [sys.executable, "-m", "workers.service"]
        self.stack.enter_context(server_process(command, port, env, quiet=True))
        return f"http://127.0.0.1:{port}"


@pytest.fixture
def services(dev_env: WorkflowEnvironment, tmp_path: Path) -> Iterator[Services]:
    started = Services(dev_env, write_config(tmp_path, CONFIG))
    with started.stack:
        yield started


@pytest.fixture(autouse=True)
async def no_run_left(dev_env: WorkflowEnvironment) -> AsyncIterator[None]:
    yield
    with contextlib.suppress(Exception):
        await dev_env.client.get_workflow_handle(WORKFLOW_ID).terminate()


def alert(status: str = "firing") -> bytes:
    return payloads.encode(
        payloads.alertmanager(status, {"alertname": "CoalesceStorm", "service": "co"}, "co-1")
    )


async def post(url: str, body: bytes) -> str:
    """The outcome the service answered for the webhook's one alert."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        response = await http.post(
            "/alerts/alertmanager",
            content=body,
            headers={**payloads.bearer(TOKEN), "Content-Type": "application/json"},
        )
    assert response.status_code == 202, response.text
    [result] = response.json()["results"]
    outcome: str = result["outcome"]
    return outcome


async def delivered(services: Services, expected: int) -> int | None:
    count = await alerts_delivered(services.dev_env.client, WORKFLOW_ID, services.queue)
    return count if count >= expected else None


async def test_duplicates_in_a_window_are_one_signal_with_their_count(
    services: Services, dev_env: WorkflowEnvironment
) -> None:
    url = services.start(window=2)
    assert await post(url, alert()) == "started"
    duplicates = 20
    outcomes = await asyncio.gather(*(post(url, alert()) for _ in range(duplicates)))
    assert set(outcomes) == {"coalesced"}
    await eventually(lambda: delivered(services, 1 + duplicates))
    signals = await alert_signals(dev_env.client, WORKFLOW_ID)
    assert [s.count for s in signals] == [1, duplicates]
    assert signals[1].first_received_at is not None
    assert signals[1].first_received_at < signals[1].received_at

    async with build_worker(dev_env.client, services.queue):
        handle = dev_env.client.get_workflow_handle(WORKFLOW_ID)

        async def report() -> RunReport | None:
            current = await handle.query(RunbookWorkflow.report)
            return current if current.alerts_attached else None

        shown = await eventually(report)
    assert shown.alerts_attached == 1 + duplicates
    [line] = [s for s in shown.steps if s.kind == "alert_duplicate"]
    assert f"fired again {duplicates} times between" in line.summary
    assert line.details["count"] == duplicates


async def test_duplicates_arriving_with_the_first_alert_wait_for_it_then_join_a_batch(
    services: Services, dev_env: WorkflowEnvironment
) -> None:
    """A storm's first copies arrive together: one starts the run, the others wait for
    Temporal's answer to it and are batched (they used to each send a signal-with-start of
    their own, contending for one workflow)."""
    url = services.start(window=2)
    copies = 20
    outcomes = await asyncio.gather(*(post(url, alert()) for _ in range(copies)))
    assert sorted(outcomes) == ["coalesced"] * (copies - 1) + ["started"]
    await eventually(lambda: delivered(services, copies))
    signals = await alert_signals(dev_env.client, WORKFLOW_ID)
    assert [s.count for s in signals] == [1, copies - 1]


async def test_a_resolution_is_never_coalesced_and_follows_the_batched_duplicates(
    services: Services, dev_env: WorkflowEnvironment
) -> None:
    url = services.start(window=30)  # the duplicates could only reach the run with the resolution
    assert await post(url, alert()) == "started"
    assert [await post(url, alert()) for _ in range(3)] == ["coalesced"] * 3
    assert await post(url, alert("resolved")) == "resolved_delivered"
    # Answered only once Temporal had it, after the duplicates received before it.
    signals = await alert_signals(dev_env.client, WORKFLOW_ID)
    assert [(s.status, s.count) for s in signals] == [
        ("firing", 1),
        ("firing", 3),
        ("resolved", 1),
    ]
    # After a resolution the next firing alert is Temporal's to answer again.
    assert await post(url, alert()) == "attached"


async def test_a_duplicate_after_the_run_ended_starts_a_new_run(
    services: Services, dev_env: WorkflowEnvironment
) -> None:
    url = services.start(window=0.2)
    assert await post(url, alert()) == "started"
    handle = dev_env.client.get_workflow_handle(WORKFLOW_ID)
    ended_run = (await handle.describe()).run_id
    await handle.terminate(reason="the run ended")
    assert await post(url, alert()) == "coalesced"  # the service still believes it attached

    async def new_run() -> str | None:
        described = await dev_env.client.get_workflow_handle(WORKFLOW_ID).describe()
        running = described.status == WorkflowExecutionStatus.RUNNING
        return described.run_id if running and described.run_id != ended_run else None

    run_id = await eventually(new_run)
    signals = await alert_signals(dev_env.client, WORKFLOW_ID, run_id)
    assert [(s.status, s.count) for s in signals] == [("firing", 1)]


async def test_stopping_the_service_delivers_its_pending_batches(
    services: Services, dev_env: WorkflowEnvironment
) -> None:
    url = services.start(window=60)
    assert await post(url, alert()) == "started"
    assert set(await asyncio.gather(*(post(url, alert()) for _ in range(5)))) == {"coalesced"}
    services.stack.close()  # SIGTERM: the lifespan's shutdown flushes, long before 60 s
    signals = await alert_signals(dev_env.client, WORKFLOW_ID)
    assert [s.count for s in signals] == [1, 5]


async def test_two_service_processes_start_one_run_per_incident(
    services: Services, dev_env: WorkflowEnvironment
) -> None:
    urls = [services.start(window=0.25), services.start(window=0.25)]
    storm = 200
    limit = asyncio.Semaphore(16)

    async def send(i: int) -> str:
        async with limit:
            return await post(urls[i % 2], alert())

    outcomes = await asyncio.gather(*(send(i) for i in range(storm)))
    assert outcomes.count("started") == 1
    assert set(outcomes) <= {"started", "attached", "coalesced"}
    assert await eventually(lambda: delivered(services, storm)) == storm
    query = f"WorkflowId = '{WORKFLOW_ID}' AND TaskQueue = '{services.queue}'"
    runs = [r async for r in dev_env.client.list_workflows(query)]
    assert len(runs) == 1
