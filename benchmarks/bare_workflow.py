"""The baseline of benchmarks/overhead.py: pool_restart's activities (safety envelope
included), in the same order, in a plain workflow with no gate, audit trail, search
attributes, status or notifications around them."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.checks import CheckSpec, VerifyInput, verify_until_stable
    from activities.postgres.models import (
        FindIdleSessionsInput,
        TargetInput,
        TerminateSessionsInput,
    )
    from activities.postgres.sessions import (
        find_idle_sessions,
        get_connection_usage,
        terminate_sessions,
    )
    from activities.safety import LeaseRelease, LeaseRequest, SafetyActivities, SafetyQuery
    from activities.targets import DescribeTargetInput, describe_target

TIMEOUT = timedelta(seconds=60)


@workflow.defn
class BareSequenceWorkflow:
    """The same activities, in the same order, with none of the engine around them."""

    @workflow.run
    async def run(self, target: str) -> bool:
        await workflow.execute_activity(
            describe_target,
            DescribeTargetInput(runbook="pool_restart", target=target),
            start_to_close_timeout=TIMEOUT,
        )
        await workflow.execute_activity(
            get_connection_usage, TargetInput(target=target), start_to_close_timeout=TIMEOUT
        )
        idle = await workflow.execute_activity(
            find_idle_sessions,
            FindIdleSessionsInput(target=target, idle_older_than_seconds=1),
            start_to_close_timeout=TIMEOUT,
        )
        await workflow.execute_activity_method(
            SafetyActivities.safety_status,
            SafetyQuery(target=target, runbook="pool_restart"),
            start_to_close_timeout=TIMEOUT,
        )
        await workflow.execute_activity_method(
            SafetyActivities.acquire_lease,
            LeaseRequest(target=target, runbook="pool_restart", holder="bare", plan_id="bare"),
            start_to_close_timeout=TIMEOUT,
        )
        await workflow.execute_activity(
            terminate_sessions,
            TerminateSessionsInput(
                target=target, sessions=idle.sessions, idle_older_than_seconds=1
            ),
            start_to_close_timeout=TIMEOUT,
            heartbeat_timeout=timedelta(seconds=10),
        )
        checks = [
            CheckSpec(kind="pg_usage_below", target=target, threshold=0.2),
            CheckSpec(kind="http_healthy", target=target),
        ]
        result = await workflow.execute_activity(
            verify_until_stable,
            VerifyInput(checks=checks, required_consecutive=1, interval_seconds=0.2),
            start_to_close_timeout=TIMEOUT,
            heartbeat_timeout=timedelta(seconds=30),
        )
        await workflow.execute_activity_method(
            SafetyActivities.release_lease,
            LeaseRelease(target=target, holder="bare"),
            start_to_close_timeout=TIMEOUT,
        )
        return result.passed
