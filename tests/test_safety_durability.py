"""The safety envelope's state lives in Temporal: a pause and a held lease survive a worker
restart and a Temporal server restart (a dev server persisting to a file, as `make run`'s)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities.config import SafetyLimits
from activities.safety import (
    LeaseRequest,
    LeaseResult,
    SafetyActivities,
    SafetyQuery,
    SafetyStatus,
    safety_workflow_id,
)
from infra.local_postgres import free_port
from infra.processes import server_process
from tests.support import switch, write_config
from workers.worker import WORKFLOW_RUNNER
from workflows.safety_envelope import SafetyEnvelopeWorkflow

QUEUE = "durability"


@contextmanager
def temporal_server(db: Path, port: int) -> Iterator[str]:
    command = [
        str(Path(sys.executable).parent / "temporal"),
        *("server", "start-dev", "--headless", "--ip", "127.0.0.1"),
        *("--port", str(port), "--db-filename", str(db), "--log-level", "error"),
    ]
    with server_process(command, port, quiet=True, start_seconds=60):
        yield f"127.0.0.1:{port}"


async def envelope_status(client: Client) -> SafetyStatus:
    async with envelope_worker(client):
        handle = await client.start_workflow(
            "SafetyEnvelopeWorkflow",
            id=safety_workflow_id(QUEUE),
            task_queue=QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        query = SafetyQuery(target="orders-db", runbook="pool_restart", limits=SafetyLimits())
        status: SafetyStatus = await handle.query("status", query, result_type=SafetyStatus)
        return status


def envelope_worker(client: Client) -> Worker:
    """The envelope and the activity that gives it the keys to check a signed switch."""
    return Worker(
        client,
        workflow_runner=WORKFLOW_RUNNER,
        task_queue=QUEUE,
        workflows=[SafetyEnvelopeWorkflow],
        activities=[SafetyActivities(client).safety_policy],
    )


async def test_pause_and_lease_survive_worker_and_server_restarts(tmp_path: Path) -> None:
    write_config(tmp_path, "")
    db, port = tmp_path / "temporal.db", free_port()
    with temporal_server(db, port) as address:
        client = await Client.connect(address, data_converter=pydantic_data_converter)
        async with envelope_worker(client):
            handle = await client.start_workflow(
                "SafetyEnvelopeWorkflow", id=safety_workflow_id(QUEUE), task_queue=QUEUE
            )
            lease = await handle.execute_update(
                "acquire",
                LeaseRequest(
                    target="orders-db", runbook="pool_restart", holder="run-1", plan_id="p"
                ),
                result_type=LeaseResult,
            )
            assert lease.granted
            await handle.execute_update(
                "pause",
                switch("carol", "pause", handle.id, "db migration"),
                result_type=SafetyStatus,
            )
        # A new worker (the old one is gone) sees the same state.
        assert (await envelope_status(client)).paused
    with temporal_server(db, port) as address:  # the server itself restarted
        client = await Client.connect(address, data_converter=pydantic_data_converter)
        status = await envelope_status(client)
    assert status.paused and status.paused_by == "carol" and status.pause_reason == "db migration"
    assert status.holder == "run-1" and status.actions_last_hour == 1
