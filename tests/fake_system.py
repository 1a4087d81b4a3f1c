"""A pool_restart system the gate tests drive: the runbook's database, verification, restart
and notification activities are fakes registered under the real names, recording what they
were asked to do; the target registry and the safety envelope are the real activities over a
real config. Used on the time-skipping server (tests/test_gate.py) and the dev server
(tests/security/).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.approval_auth import authenticate_decision
from activities.checks import VerifyInput, VerifyResult
from activities.deploy.models import RestartAppInput, RestartAppResult
from activities.notify.models import Notification, NotifyResult
from activities.postgres.models import (
    ConnectionUsage,
    FindIdleSessionsInput,
    IdleSessions,
    SessionRef,
    TargetInput,
    TerminateSessionsInput,
    TerminateSessionsResult,
)
from activities.safety import SafetyActivities, SafetyStatus, safety_workflow_id
from activities.targets import describe_target
from tests.support import switch
from workers.worker import WORKFLOW_RUNNER
from workflows.models import RunReport, RunStatus
from workflows.pool_restart import PoolRestartWorkflow
from workflows.safety_envelope import SafetyEnvelopeWorkflow

CONFIG = """
[targets.orders-db]
kind = "postgres"
dsn = {{ env = "UNUSED_IN_GATE_TESTS" }}
health_url = "http://127.0.0.1:9/health"
restart = {{ url = "http://127.0.0.1:9/restart" }}

[runbooks.pool_restart]
usage_threshold = 0.8
idle_older_than_seconds = 300

[runbooks.pool_restart.gate]
required_group = "engineering-leads"
remind_after = 600
abort_after = 1800
{auto}
"""

AUTO = """
[runbooks.pool_restart.gate.auto_approve]
name = "small-idle-cleanup"
actions = ["terminate_idle_sessions"]
max_affected = 50
max_share = 0.4
allow_irreversible = true
"""

START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class FakeSystem:
    """What the fake activities see and record."""

    total: int = 90
    idle_pids: list[int] = field(default_factory=lambda: list(range(1000, 1030)))
    verify_passes: bool = True
    notify_fails: bool = False
    terminated: list[list[int]] = field(default_factory=list)
    restarts: list[str] = field(default_factory=list)
    notes: list[Notification] = field(default_factory=list)
    # Incident records posted at the runs' end (their own activity, beside notify).
    records: list[Notification] = field(default_factory=list)
    planning_allowed: asyncio.Event = field(default_factory=asyncio.Event)
    verifying_allowed: asyncio.Event = field(default_factory=asyncio.Event)

    def sessions(self) -> list[SessionRef]:
        return [
            SessionRef(
                pid=pid,
                backend_start=START,
                user="app",
                application="orders-api",
                state="idle",
                idle_seconds=900,
            )
            for pid in self.idle_pids
        ]

    def activities(self, client: Client, *, fake_notify: bool = True) -> list[object]:
        """The fakes and the real activities named above; `fake_notify=False` leaves out the
        recording `notify`, for a test that registers the real one."""

        @activity.defn(name="get_connection_usage")
        async def usage(params: TargetInput) -> ConnectionUsage:
            return ConnectionUsage(
                target=params.target,
                database="orders",
                max_connections=100,
                total=self.total,
                usage=self.total / 100,
                by_state={"idle": len(self.idle_pids)},
                by_user={"app": self.total},
                by_application={"orders-api": self.total},
            )

        @activity.defn(name="find_idle_sessions")
        async def idle(params: FindIdleSessionsInput) -> IdleSessions:
            await self.planning_allowed.wait()
            return IdleSessions(sessions=self.sessions())

        @activity.defn(name="terminate_sessions")
        async def terminate(params: TerminateSessionsInput) -> TerminateSessionsResult:
            pids = [s.pid for s in params.sessions]
            self.terminated.append(pids)
            return TerminateSessionsResult(terminated=pids)

        @activity.defn(name="verify_until_stable")
        async def verify(params: VerifyInput) -> VerifyResult:
            await self.verifying_allowed.wait()
            return VerifyResult(
                passed=self.verify_passes, attempts=3, consecutive=3, elapsed_seconds=10
            )

        @activity.defn(name="restart_app")
        async def restart(params: RestartAppInput) -> RestartAppResult:
            self.restarts.append(params.idempotency_key)
            return RestartAppResult(url="http://fake/restart", status_code=200, already_done=False)

        @activity.defn(name="notify")
        async def note(params: Notification) -> NotifyResult:
            self.notes.append(params)
            if self.notify_fails:
                raise ApplicationError("webhook answered 503", non_retryable=True)
            return NotifyResult()

        @activity.defn(name="post_incident_record")
        async def record(params: Notification) -> NotifyResult:
            self.records.append(params)
            return NotifyResult()

        safety = SafetyActivities(client)
        return [
            *(usage, idle, terminate, verify, restart, record),
            *([note] if fake_notify else []),
            *(describe_target, authenticate_decision),
            *(safety.safety_status, safety.acquire_lease, safety.release_lease),
            *(safety.check_in, safety.safety_policy),
        ]


Handle = WorkflowHandle[PoolRestartWorkflow, RunReport]


@asynccontextmanager
async def running(env: WorkflowEnvironment, system: FakeSystem) -> AsyncIterator[str]:
    queue = f"safety-{uuid.uuid4().hex[:6]}"
    system.planning_allowed.set()
    async with Worker(
        env.client,
        workflow_runner=WORKFLOW_RUNNER,
        task_queue=queue,
        workflows=[PoolRestartWorkflow, SafetyEnvelopeWorkflow],
        activities=system.activities(env.client),  # type: ignore[arg-type]
        max_cached_workflows=0,
    ):
        yield queue


async def envelope(
    env: WorkflowEnvironment, queue: str, update: Literal["pause", "resume"], by: str
) -> SafetyStatus:
    handle = await env.client.start_workflow(
        "SafetyEnvelopeWorkflow",
        id=safety_workflow_id(queue),
        task_queue=queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    status: SafetyStatus = await handle.execute_update(
        update,
        switch(by, update, handle.id, "incident review", await env.get_current_time()),
        result_type=SafetyStatus,
    )
    return status


async def status_is(handle: Handle, status: RunStatus) -> bool:
    return (await handle.query(PoolRestartWorkflow.report)).status == status
