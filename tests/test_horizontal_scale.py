"""Many workers on one task queue, two service processes, one dev server: the deployment the
README's "Deploying" section describes, as processes started the way the image starts them.

- Alerts for six incidents go to either service, with duplicates to the other: one run each.
- Gates are listed by one service and approved through the other.
- The runs spread over three worker processes; one is SIGKILLed while it runs an activity of
  some run: every run still completes, and no target's flag was changed twice (the test app
  counts each change).
- A worker sent SIGTERM finishes its running activity before it exits (the drain), instead
  of leaving it to time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from tests.deployment import (
    TARGETS,
    Deployment,
    approve_everything,
    process_env,
    send_alert,
    write_deployment_config,
)
from tests.flag_app import FlagApp, flag_app
from tests.support import eventually
from workflows.models import RunReport, RunStatus


@pytest.fixture
def app() -> Iterator[FlagApp]:
    with flag_app() as running:
        yield running


@pytest.fixture
async def deployment(
    dev_env: WorkflowEnvironment, app: FlagApp, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Deployment]:
    config = write_deployment_config(tmp_path, app.url, getattr(request, "param", 1.0))
    temporal = {
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": dev_env.client.namespace,
    }
    deployed = Deployment(dev_env.client, process_env(config, temporal))
    try:
        yield deployed
    finally:
        deployed.stop()
        for name in TARGETS:
            with contextlib.suppress(Exception):
                await dev_env.client.get_workflow_handle(f"read_only-{name}").terminate()


async def activity_workers(client: Client, workflow_id: str) -> list[str]:
    """The identity of the worker that started each activity attempt of the run."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return [
        e.activity_task_started_event_attributes.identity
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]


async def running_activity(client: Client, workflow_ids: list[str], kind: str) -> str | None:
    """The identity of a worker running an activity of type `kind` for one of the runs."""
    for workflow_id in workflow_ids:
        description = await client.get_workflow_handle(workflow_id).describe()
        for pending in description.raw_description.pending_activities:
            if pending.activity_type.name == kind and pending.last_started_time.seconds:
                return pending.last_worker_identity or None
    return None


async def test_three_workers_two_services_and_a_killed_worker(
    deployment: Deployment, app: FlagApp
) -> None:
    for _ in range(3):
        deployment.start_worker()
    services = [deployment.start_service(), deployment.start_service()]
    client = deployment.client

    firsts = await asyncio.gather(
        *(send_alert(services[i % 2], name) for i, name in enumerate(TARGETS))
    )
    assert firsts == ["started"] * len(TARGETS)
    duplicates = await asyncio.gather(
        *(send_alert(services[(i + 1) % 2], name) for i, name in enumerate(TARGETS))
    )
    assert set(duplicates) <= {"attached", "coalesced"}
    workflow_ids = [f"read_only-{name}" for name in TARGETS]

    stop = asyncio.Event()
    approver = asyncio.create_task(approve_everything(services, stop))
    try:
        # Kill a worker while it runs a verification: another worker takes it over once its
        # heartbeat timeout (workflows/policies.py:HEARTBEAT_TIMEOUT, 10 s) passes, as it
        # would any other step (the worker heartbeats every step: issue 17).
        victim = await eventually(
            lambda: running_activity(client, workflow_ids, "verify_until_stable"), seconds=60
        )
        deployment.workers[victim].kill()
        deployment.workers[victim].wait()
        reports: list[RunReport] = await asyncio.wait_for(
            asyncio.gather(
                *(
                    client.get_workflow_handle(w, result_type=RunReport).result()
                    for w in workflow_ids
                )
            ),
            timeout=150,
        )
    finally:
        stop.set()
        approved = await approver
    assert [r.status for r in reports] == [RunStatus.REMEDIATED] * len(TARGETS), [
        (r.workflow_id, r.status, r.summary) for r in reports
    ]
    # Every target entered and left read-only exactly once: nothing acted twice, though a
    # worker died holding an activity (which was retried elsewhere) and two services decided.
    assert app.changes == {(name, value): 1 for name in TARGETS for value in (True, False)}
    assert approved == 2 * len(TARGETS)  # each run's enter and exit gates, once each
    started_by = [w for wid in workflow_ids for w in await activity_workers(client, wid)]
    assert len(set(started_by)) == 3, "the runs' activities spread over the three workers"
    assert victim in started_by
    # Exactly one run per incident, whichever service each alert reached.
    runs = [
        w
        async for w in client.list_workflows(
            f"TaskQueue = '{deployment.queue}' AND WorkflowType = 'ReadOnlyWorkflow'"
        )
    ]
    assert sorted(r.id for r in runs) == sorted(workflow_ids)
    assert all(r.status == WorkflowExecutionStatus.COMPLETED for r in runs)
    print(f"killed {victim} while it verified; {approved} gates approved")


@pytest.mark.parametrize("deployment", [2.0], indirect=True)
async def test_sigterm_drains_the_running_activity_before_the_worker_exits(
    deployment: Deployment, app: FlagApp
) -> None:
    """The verification (two checks, 2 s apart) is running when the worker gets SIGTERM: it
    completes on that worker, which then exits 0; a second worker finishes the run."""
    first = deployment.start_worker(drain=30)
    [service] = [deployment.start_service()]
    client = deployment.client
    name = TARGETS[0]
    workflow_id = f"read_only-{name}"
    assert await send_alert(service, name) == "started"
    stop = asyncio.Event()
    approver = asyncio.create_task(approve_everything([service, service], stop))
    try:

        async def verifying() -> bool:
            return await running_activity(client, [workflow_id], "verify_until_stable") == first

        await eventually(verifying, seconds=60)
        process = deployment.workers[first]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 60) == 0
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        outcomes = [
            e.event_type
            for e in history.events
            if e.event_type
            in (
                EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
                EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
                EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
            )
        ]
        # The verification finished on the draining worker: completed, not failed or timed out.
        assert outcomes and set(outcomes) == {EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED}
        description = await client.get_workflow_handle(workflow_id).describe()
        assert not description.raw_description.pending_activities
        deployment.start_worker()
        report = await asyncio.wait_for(
            client.get_workflow_handle(workflow_id, result_type=RunReport).result(), 120
        )
    finally:
        stop.set()
        await approver
    assert report.status == RunStatus.REMEDIATED
    assert app.changes == {(name, True): 1, (name, False): 1}
