"""The attacker's world: a real Temporal dev server that everyone (the attacker included) can
reach with a raw client, the real runbook and gate on a worker whose metrics are buffered (so
a test sees the refusals it counted), fake target activities that record every action, and,
where a test needs it, the real approval service as a process."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from infra.local_postgres import free_port
from infra.processes import server_process
from tests.fake_system import CONFIG, FakeSystem
from tests.support import start_signed, write_config
from workers.worker import WORKFLOW_RUNNER
from workflows.approval_gate import REFUSALS_METRIC
from workflows.models import RunbookInput, RunReport
from workflows.pool_restart import PoolRestartWorkflow
from workflows.safety_envelope import SafetyEnvelopeWorkflow

Handle = WorkflowHandle[Any, RunReport]


@dataclass
class World:
    client: Client  # raw Temporal access: what an attacker with network access has
    system: FakeSystem
    queue: str
    config: Path
    buffer: MetricBuffer
    counted: float = 0.0

    def refusals(self) -> float:
        """Decisions the worker refused before they reached a run (its metric, so far)."""
        self.counted += sum(
            update.value
            for update in self.buffer.retrieve_updates()
            if update.metric.name == REFUSALS_METRIC
        )
        return self.counted

    async def start(
        self, requested_by: str = "alice", *, signed: bool = True, workflow_id: str = ""
    ) -> Handle:
        params = RunbookInput(target="orders-db", requested_by=requested_by)
        wid = workflow_id or f"pool_restart-orders-db-{uuid.uuid4().hex[:8]}"
        if signed:
            return await start_signed(
                self.client, PoolRestartWorkflow.run, params, id=wid, task_queue=self.queue
            )
        return await self.client.start_workflow(
            PoolRestartWorkflow.run, params, id=wid, task_queue=self.queue
        )


@pytest.fixture(scope="module")
async def metered(dev_env: WorkflowEnvironment) -> AsyncIterator[tuple[Client, MetricBuffer]]:
    buffer = MetricBuffer(100_000)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    client = await Client.connect(
        dev_env.client.service_client.config.target_host,
        namespace=dev_env.client.namespace,
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )
    yield client, buffer


@pytest.fixture
def config_text() -> str:
    """The config the world runs with (a test overrides it to add policy)."""
    return CONFIG.format(auto="")


@pytest.fixture
async def world(
    metered: tuple[Client, MetricBuffer], tmp_path: Path, config_text: str
) -> AsyncIterator[World]:
    client, buffer = metered
    config = write_config(tmp_path, config_text)
    fake = FakeSystem()
    fake.planning_allowed.set()
    fake.verifying_allowed.set()
    queue = f"security-{uuid.uuid4().hex[:6]}"
    async with Worker(
        client,
        workflow_runner=WORKFLOW_RUNNER,
        task_queue=queue,
        workflows=[PoolRestartWorkflow, SafetyEnvelopeWorkflow],
        activities=fake.activities(client),  # type: ignore[arg-type]
    ):
        world = World(client, fake, queue, config, buffer)
        world.refusals()  # start counting from here
        yield world


@pytest.fixture
def service(world: World) -> Iterator[str]:
    """The approval service over the world's config and queue: the only holder of the key."""
    port = free_port()
    env = {
        **os.environ,
        "REMEDIATE_CONFIG": str(world.config),
        "REMEDIATE_TEMPORAL_ADDRESS": world.client.service_client.config.target_host,
        "REMEDIATE_TASK_QUEUE": world.queue,
        "REMEDIATE_API_PORT": str(port),
    }
    with server_process([sys.executable, "-m", "workers.service"], port, env):
        yield f"http://127.0.0.1:{port}"


def accepted_updates(events: list[HistoryEvent]) -> list[HistoryEvent]:
    return [e for e in events if e.HasField("workflow_execution_update_accepted_event_attributes")]
