"""A workflow that runs one real activity exactly once, with the heartbeat timeout a test
gives it: on a real server, an activity whose heartbeats do not fit that timeout fails the
run instead of being retried out of sight."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel


class OneAttemptInput(BaseModel):
    activity: str
    argument: dict[str, Any]
    heartbeat_timeout_seconds: float
    start_to_close_seconds: float = 120.0


@workflow.defn(name="OneAttemptWorkflow")
class OneAttemptWorkflow:
    @workflow.run
    async def run(self, params: OneAttemptInput) -> dict[str, Any]:
        result: dict[str, Any] = await workflow.execute_activity(
            params.activity,
            params.argument,
            start_to_close_timeout=timedelta(seconds=params.start_to_close_seconds),
            heartbeat_timeout=timedelta(seconds=params.heartbeat_timeout_seconds),
            retry_policy=RetryPolicy(maximum_attempts=1),
            result_type=dict,
        )
        return result
