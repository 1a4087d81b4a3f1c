"""The runbooks' way to the safety envelope, a long-lived Temporal workflow that holds, per
target, who may act now (one destructive remediation at a time across all runbooks), the
recent actions (cooldown, hourly budget) and the global kill switch. Its state is durable in
Temporal and survives worker and server restarts.

These activities reach it through the client, by workflow type and update names, so that
activities never import workflow code.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from activities.approval_auth import verify_keys
from activities.config import SafetyLimits, load_config
from activities.safety_models import SAFETY_WORKFLOW_TYPE as SAFETY_WORKFLOW_TYPE
from activities.safety_models import SafetyQuery as SafetyQuery
from activities.safety_models import SafetyStatus as SafetyStatus
from activities.safety_models import SwitchRecord as SwitchRecord
from activities.safety_models import safety_workflow_id as safety_workflow_id


class LeaseRequest(BaseModel):
    target: str
    runbook: str
    holder: str  # the run's workflow id
    plan_id: str
    limits: SafetyLimits = Field(default_factory=SafetyLimits)
    # Other targets the plan touches (a rotation's consumers): leased with the target, all
    # or none.
    also: list[str] = Field(default_factory=list)


class LeaseResult(BaseModel):
    granted: bool
    reason: str = ""
    # How long the lease lasts unless renewed (0 from envelopes that did not say).
    ttl_seconds: int = 0


class LeaseRelease(BaseModel):
    target: str
    holder: str
    also: list[str] = Field(default_factory=list)
    # False: the run lets go without having acted (its plan was dropped): the action taken
    # with the lease no longer counts against the cooldown and the hourly budget.
    acted: bool = True


class LeaseCheckIn(BaseModel):
    """A holder renewing its leases, and asking whether it may go on acting."""

    targets: list[str]
    holder: str
    runbook: str
    plan_id: str = ""
    limits: SafetyLimits = Field(default_factory=SafetyLimits)


class CheckInResult(BaseModel):
    paused: bool
    # "paused by alice: reason", when paused.
    reason: str = ""
    # Targets whose lease expired and another run took meanwhile ("orders-db (run-id)").
    lost: list[str] = Field(default_factory=list)
    ttl_seconds: int = 0


class PauseRequest(BaseModel):
    """A pause or resume of the kill switch: a token the approval service signed for the
    identity it authenticated. `by` and `reason` are what envelopes recorded before the
    switch was signed; they are read only when such a history is replayed."""

    token: str = ""
    by: str = ""
    reason: str = ""


class OpenRunsQuery(BaseModel):
    target: str
    exclude: str = ""  # the asking run's own workflow id


class SafetyPolicy(BaseModel):
    """What the envelope needs to check a signed pause or resume (public keys: not secret)."""

    verify_keys: list[str]
    resume_group: str
    max_decision_age_seconds: int


# The envelope's workflow task timeout (Temporal's default is 10 s). Every acting run waits
# on the envelope (status, leases); when the worker that holds its task dies, the task is
# handed to another worker only after this, so it bounds how long a worker's death stalls
# them all. Its tasks are small: 5 s leaves a busy worker room.
ENVELOPE_TASK_TIMEOUT = timedelta(seconds=5)


class SafetyActivities:
    """Activities that need a Temporal client; the worker constructs this with its own."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def _handle(self) -> str:
        task_queue = activity.info().task_queue
        workflow_id = safety_workflow_id(task_queue)
        await self.client.start_workflow(
            SAFETY_WORKFLOW_TYPE,
            id=workflow_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            task_timeout=ENVELOPE_TASK_TIMEOUT,
        )
        return workflow_id

    @activity.defn
    async def safety_status(self, query: SafetyQuery) -> SafetyStatus:
        handle = self.client.get_workflow_handle(await self._handle())
        limits = _limits(query.target, query.runbook)
        query = query.model_copy(update={"limits": limits, "now": datetime.now(UTC)})
        status: SafetyStatus = await handle.query("status", query, result_type=SafetyStatus)
        return status

    @activity.defn
    async def acquire_lease(self, request: LeaseRequest) -> LeaseResult:
        handle = self.client.get_workflow_handle(await self._handle())
        request = request.model_copy(update={"limits": _limits(request.target, request.runbook)})
        # Idempotent in the envelope: the same holder asking again keeps its lease.
        result: LeaseResult = await handle.execute_update(
            "acquire", request, result_type=LeaseResult
        )
        return result

    @activity.defn
    async def check_in(self, request: LeaseCheckIn) -> CheckInResult:
        handle = self.client.get_workflow_handle(await self._handle())
        request = request.model_copy(
            update={
                "limits": _limits(request.targets[0] if request.targets else "", request.runbook)
            }
        )
        result: CheckInResult = await handle.execute_update(
            "check_in", request, result_type=CheckInResult
        )
        return result

    @activity.defn
    async def release_lease(self, release: LeaseRelease) -> None:
        handle = self.client.get_workflow_handle(await self._handle())
        await handle.execute_update("release", release)

    @activity.defn
    async def open_runs(self, query: OpenRunsQuery) -> list[str]:
        """Remediation runs still open on a target (from Temporal's visibility: a run at its
        gate holds no lease yet, but it is a remediation in progress)."""
        name = query.target.replace("\\", "\\\\").replace("'", "\\'")
        queue = activity.info().task_queue  # this deployment's runs, as the envelope's
        found = []
        async for run in self.client.list_workflows(
            f"RemediationTarget = '{name}' AND ExecutionStatus = 'Running' "
            f"AND TaskQueue = '{queue}'"
        ):
            if run.id != query.exclude:
                found.append(run.id)
        return sorted(found)

    @activity.defn
    async def safety_policy(self) -> SafetyPolicy:
        config = load_config()
        return SafetyPolicy(
            verify_keys=verify_keys(config.approvals),
            resume_group=config.safety.resume_group,
            max_decision_age_seconds=config.approvals.max_decision_age_seconds,
        )


def _limits(target: str, runbook: str) -> SafetyLimits:
    return load_config().safety.for_run(target, runbook)
