"""A worker process for tests/test_fast_recovery.py: the engine's worker options (the
keep-alive interceptor, the heartbeat throttle, the sticky queue's timeout) with the test's
slow activities, so a test can SIGKILL it mid-activity:

    python -m tests.recovery_worker ADDRESS NAMESPACE QUEUE

- `slow_step`: heartbeats its progress once, then waits without heartbeating; only the
  keep-alive keeps it alive. A retry returns what it resumed from.
- `recording_step`: records a batch number every half second with `heartbeats.record`, as
  terminate_sessions does; a retry returns the batch it resumed from.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities import heartbeats
from tests.recovery_workflow import RecoveryStepWorkflow
from workers.activity_keepalive import KeepAlive
from workers.worker import HEARTBEAT_THROTTLE, STICKY_TIMEOUT, WORKFLOW_RUNNER


def resumed() -> dict[str, Any]:
    info = activity.info()
    return {"attempt": info.attempt, "resumed_from": list(info.heartbeat_details)}


@activity.defn
async def slow_step() -> dict[str, Any]:
    if activity.info().attempt > 1:
        return resumed()
    activity.heartbeat({"progress": "half way"})
    await asyncio.sleep(3600)
    return resumed()


@activity.defn
@heartbeats.records_details
async def recording_step() -> dict[str, Any]:
    if activity.info().attempt > 1:
        return resumed()
    batch = 0
    while True:
        batch += 1
        await heartbeats.record({"batch": batch})
        await asyncio.sleep(0.5)


async def main(address: str, namespace: str, queue: str) -> None:
    client = await Client.connect(
        address, namespace=namespace, data_converter=pydantic_data_converter
    )
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[RecoveryStepWorkflow],
        activities=[slow_step, recording_step],
        workflow_runner=WORKFLOW_RUNNER,
        interceptors=[KeepAlive()],
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
    )
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
