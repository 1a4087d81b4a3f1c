"""The gauges GET /metrics reads from Temporal at each scrape: gates pending, the oldest open
gate's wait, finished runs by status (from Temporal's visibility), the kill switch and the
leases held (from the safety envelope). Not from this process's memory, so every service
replica reports the same figures and a restart loses nothing. When Temporal does not answer,
the gauges keep their last values.

The oldest gate's wait needs when each gate opened: a run publishes it as a search attribute
as its gate opens (workflows/gate_visibility.py), so one visibility listing gives it for every
waiting run. A run waiting without it (its gate opened before that version) is asked its
`pending_gate` (a query, answered by a worker, bounded by a short timeout); a run that does
not answer in time counts from its start instead: an upper bound, so a stuck worker makes the
figure err towards alerting, never towards silence."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from datetime import UTC, datetime, timedelta

from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.service import RPCError, RPCStatusCode

from activities.safety import SafetyQuery, SafetyStatus, safety_workflow_id
from workers.gate_listing import WAITING_QUERY, asked_gate, listed_opened_at
from workers.http_common import TEMPORAL_DOWN
from workers.metrics import (
    GATE_OLDEST_WAIT,
    GATES_PENDING,
    KILL_SWITCH,
    LEASES_HELD,
    OUTCOMES,
    RUN_OUTCOMES,
)
from workflows.models import GateView
from workflows.names import SA_STATUS
from workflows.safety_envelope import Lease

# A scrape must answer well within Prometheus's scrape timeout (10 s by default), even with
# no worker to answer the gate queries.
GATE_QUERY_TIMEOUT = timedelta(seconds=2)
# Past this many waiting runs (ten visibility pages), the oldest among these is reported.
MAX_GATES_EXAMINED = 10_000
# Runs asked directly at once (those that did not publish when their gate opened).
QUERY_CONCURRENCY = 16


async def refresh(client: Client, task_queue: str) -> None:
    """Set the Temporal-derived gauges; leave them as they were if Temporal does not answer."""
    with suppress(*TEMPORAL_DOWN):
        pending, *finished = await asyncio.gather(
            client.count_workflows(WAITING_QUERY),
            *(client.count_workflows(f"{SA_STATUS.name} = '{s.value}'") for s in OUTCOMES),
        )
        GATES_PENDING.set(pending.count)
        for status, count in zip(OUTCOMES, finished, strict=True):
            RUN_OUTCOMES.labels(status.value).set(count.count)
        opened = await gates_opened_at(client)
        GATE_OLDEST_WAIT.set(oldest_wait_seconds(datetime.now(UTC), opened))
        await envelope_state(client, task_queue)


async def envelope_state(client: Client, task_queue: str) -> None:
    """The kill switch and the leases held, from the envelope (not started for a scrape: no
    envelope yet means nothing paused and nothing held)."""
    handle = client.get_workflow_handle(safety_workflow_id(task_queue))
    try:
        status, leases = await asyncio.gather(
            handle.query(
                "status",
                SafetyQuery(target="", runbook=""),
                result_type=SafetyStatus,
                rpc_timeout=GATE_QUERY_TIMEOUT,
            ),
            handle.query(
                "held_leases", result_type=dict[str, Lease], rpc_timeout=GATE_QUERY_TIMEOUT
            ),
        )
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        status, leases = SafetyStatus(paused=False), {}
    KILL_SWITCH.set(1 if status.paused else 0)
    LEASES_HELD.set(len(leases))


async def gates_opened_at(client: Client) -> list[datetime]:
    """When each waiting run's gate opened (or, unanswered, when the run started): one
    visibility listing, and a query only to runs that did not publish it."""
    waiting = [
        execution
        async for execution in client.list_workflows(WAITING_QUERY, limit=MAX_GATES_EXAMINED)
    ]
    asking = asyncio.Semaphore(QUERY_CONCURRENCY)

    async def opened(execution: WorkflowExecution) -> datetime:
        listed = listed_opened_at(execution)
        if listed is not None:
            return listed
        async with asking:
            return await gate_opened_at(client, execution)

    return list(await asyncio.gather(*(opened(e) for e in waiting)))


async def gate_opened_at(client: Client, execution: WorkflowExecution) -> datetime:
    """When the run's open gate opened, as the run says; its start if it does not answer."""
    gate: GateView | None = None
    with suppress(*TEMPORAL_DOWN, WorkflowQueryFailedError, WorkflowQueryRejectedError):
        gate = await asked_gate(client, execution, GATE_QUERY_TIMEOUT)
    # None: between the status change and the gate's opening, or no worker answered.
    return gate.opened_at if gate is not None else execution.start_time


def oldest_wait_seconds(now: datetime, opened: list[datetime]) -> float:
    """How long the oldest of these gates has waited; 0 when none waits."""
    return max((max(0.0, (now - at).total_seconds()) for at in opened), default=0.0)
