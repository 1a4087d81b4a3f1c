"""A workflow that runs one named activity the way the runbooks run theirs (the engine's
heartbeat timeout, a 2-minute start-to-close, retries 1 s apart), and can have it cancelled:
what tests/test_fast_recovery.py kills workers under. In a module of its own, importing
little, so the workflow sandbox can load it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from workflows.policies import HEARTBEAT_TIMEOUT, STEP_TIMEOUT


class StepInput(BaseModel):
    activity: str
    maximum_attempts: int = 5


@workflow.defn(name="RecoveryStepWorkflow")
class RecoveryStepWorkflow:
    @workflow.run
    async def run(self, params: StepInput) -> dict[str, Any]:
        result: dict[str, Any] = await workflow.execute_activity(
            params.activity,
            start_to_close_timeout=STEP_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1), maximum_attempts=params.maximum_attempts
            ),
            # A cancelled run waits for the activity to acknowledge, so its history shows
            # that the cancellation reached it.
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            result_type=dict,
        )
        return result
