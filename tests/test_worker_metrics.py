"""The worker's Prometheus endpoint, as a scraper sees it: the SDK's own `temporal_*` metrics
and the engine's `remediation_*` ones, for runs on a real dev server, through the runtime the
worker builds from REMEDIATE_WORKER_METRICS_ADDRESS. Replays (a run evicted from the cache
and resumed) count nothing twice; a workflow task that timed out on a busy worker and ran
again counts its new events again (the SDK's rule), which the counts allow for."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from infra.local_postgres import free_port
from tests.fake_system import AUTO, CONFIG, FakeSystem
from tests.support import eventually, mint, start_signed, wait_for_gate, write_config
from workers.settings import Settings, metrics_runtime
from workers.temporal_config import TemporalTarget
from workers.temporal_connect import connect_to
from workers.worker import WORKFLOW_RUNNER
from workflows.models import DecisionOutcome, RunbookInput, RunStatus
from workflows.pool_restart import PoolRestartWorkflow
from workflows.safety_envelope import SafetyEnvelopeWorkflow

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Scraper:
    def __init__(self, address: str) -> None:
        self.url = f"http://{address}/metrics"

    async def samples(self) -> Samples:
        async with httpx.AsyncClient() as http:
            text = (await http.get(self.url, timeout=5)).text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    async def value(self, name: str, **labels: str) -> float:
        """The sum over every series of `name` whose labels include `labels`. (The parser names
        a counter's samples `<name>_total`; the SDK exports them without the suffix.)"""
        wanted, names = set(labels.items()), {name, f"{name}_total"}
        return sum(
            v for (n, ls), v in (await self.samples()).items() if n in names and wanted <= ls
        )


async def retried_tasks(*handles: WorkflowHandle[Any, Any]) -> int:
    """Workflow tasks of these runs that timed out or failed (and so were run again)."""
    retried = 0
    for handle in handles:
        async for event in handle.fetch_history_events():
            retried += event.event_type in (
                EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
                EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
            )
    return retried


@pytest.fixture(scope="module")
async def metered(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Client, Scraper, FakeSystem, str]]:
    write_config(tmp_path_factory.mktemp("config"), CONFIG.format(auto=AUTO))
    address = f"127.0.0.1:{free_port()}"
    runtime = metrics_runtime(Settings(worker_metrics_address=address))
    assert runtime is not None
    server = dev_env.client.service_client.config.target_host
    client = await connect_to(TemporalTarget(server, dev_env.client.namespace), runtime)
    system = FakeSystem()
    system.planning_allowed.set()
    system.verifying_allowed.set()
    queue = f"metrics-{uuid.uuid4().hex[:6]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[PoolRestartWorkflow, SafetyEnvelopeWorkflow],
        activities=system.activities(client),  # type: ignore[arg-type]
        workflow_runner=WORKFLOW_RUNNER,
        # Every workflow task replays the run from its start: nothing may count twice.
        max_cached_workflows=0,
    ):
        yield client, Scraper(address), system, queue


async def test_runs_gates_and_approvals_are_counted_once_each(
    metered: tuple[Client, Scraper, FakeSystem, str],
) -> None:
    client, scraper, system, queue = metered

    # Within the auto-approval policy: approved by the policy as the plan is made.
    system.idle_pids = list(range(1000, 1010))
    auto = await start_signed(
        client,
        PoolRestartWorkflow.run,
        RunbookInput(target="orders-db", requested_by="alice"),
        id=f"metrics-auto-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
    )
    assert (await auto.result()).status == RunStatus.REMEDIATED

    # Beyond it (70 of 90 sessions): a lead approves at the gate.
    system.idle_pids = list(range(2000, 2070))
    gated = await start_signed(
        client,
        PoolRestartWorkflow.run,
        RunbookInput(target="orders-db", requested_by="alice"),
        id=f"metrics-gated-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
    )
    gate = await wait_for_gate(gated)
    decision = await gated.execute_update(
        PoolRestartWorkflow.approve, mint("bob", gate, "approve", "ok")
    )
    assert decision.outcome == DecisionOutcome.APPROVED
    assert (await gated.result()).status == RunStatus.REMEDIATED

    # A workflow task that timed out or failed on a busy machine runs its new code again (not
    # as a replay), counting what it counted again: each count is exact but for those.
    retried = await retried_tasks(auto, gated)

    async def counted() -> bool:
        finished = await scraper.value("remediation_runs_finished", outcome="Remediated")
        return 2 <= finished <= 2 + retried

    await eventually(counted, seconds=15)  # the SDK exports on its own schedule

    async def exactly(expected: int, name: str, **labels: str) -> None:
        value = await scraper.value(name, **labels)
        assert expected <= value <= expected + retried, (name, labels, value, retried)

    await exactly(2, "remediation_runs_started", runbook="pool_restart")
    await exactly(2, "remediation_runs_started", trigger="manual")
    await exactly(1, "remediation_gates_opened", runbook="pool_restart")
    approve = "remediation_time_to_approve_seconds_count"
    await exactly(1, approve, runbook="pool_restart", by="policy")
    await exactly(1, approve, runbook="pool_restart", by="person")
    await exactly(2, "remediation_time_to_remediate_seconds_count", runbook="pool_restart")
    # The configured buckets, not the SDK's millisecond defaults.
    buckets = {
        dict(labels)["le"]
        for (name, labels), _ in (await scraper.samples()).items()
        if name == "remediation_time_to_approve_seconds_bucket"
    }
    assert {"1", "60", "3600"} <= buckets
    # The SDK's own worker metrics are on the same endpoint.
    assert await scraper.value("temporal_workflow_completed", task_queue=queue) >= 2
