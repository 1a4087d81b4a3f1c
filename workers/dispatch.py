"""Turn a routed alert into exactly one run per incident.

A firing alert is a signal-with-start on the runbook's deterministic workflow id: the first
starts the run, duplicates are delivered to it (and land in its audit trail). Temporal
decides atomically which happened, so many intake replicas need no lock of their own. A
resolved alert is only ever a signal: it never starts a run.

A duplicate of a firing alert this process saw attached moments ago is batched instead
(`workers.coalescer`) and answered "coalesced" before Temporal has it: it changes no decision.
Everything else is answered only once Temporal recorded it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.config import EngineConfig, RouteConfig, load_config
from workers.alert_payloads import IncomingAlert
from workers.coalescer import Batch, CoalescePolicy, Coalescer, Key
from workers.metrics import RUNS_STARTED
from workers.routing import route_for
from workers.runs import start_run, started
from workflows.models import AlertSignal, RunbookInput
from workflows.names import workflow_id_for
from workflows.runbook import RunbookWorkflow

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    STARTED = "started"
    ATTACHED = "attached"
    COALESCED = "coalesced"
    RESOLVED_DELIVERED = "resolved_delivered"
    RESOLVED_NO_RUN = "resolved_no_run"
    UNROUTED = "unrouted"


@dataclass(frozen=True)
class Dispatched:
    outcome: Outcome
    fingerprint: str
    route: str | None = None
    workflow_id: str | None = None
    runbook: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "outcome": self.outcome.value,
            "fingerprint": self.fingerprint,
            "route": self.route,
            "workflow_id": self.workflow_id,
            "runbook": self.runbook,
        }


class Dispatcher:
    """One per service process: the Temporal client, the task queue runs start on, and the
    coalescer of this process's duplicates (None: every alert is its own RPC)."""

    def __init__(
        self, client: Client, task_queue: str, policy: CoalescePolicy | None = None
    ) -> None:
        self.client = client
        self.task_queue = task_queue
        self.coalescer = None if policy is None else Coalescer(self._deliver_batch, policy)
        # Keys whose first firing alert is on its way to Temporal in this process: their
        # duplicates wait for it, then join a batch, instead of each contending for the
        # same workflow with an RPC of its own.
        self._firing: dict[Key, asyncio.Future[None]] = {}

    async def dispatch(self, config: EngineConfig, incoming: IncomingAlert) -> Dispatched:
        alert = incoming.alert
        route = route_for(config, alert)
        if route is None:
            return Dispatched(Outcome.UNROUTED, alert.fingerprint)
        workflow_id = workflow_id_for(route.runbook, route.target)
        key = Key(route.name, workflow_id, alert.fingerprint)
        signal = AlertSignal(status=incoming.status, alert=alert, received_at=datetime.now(UTC))
        if incoming.status == "resolved":
            outcome = await self._resolve(key, signal)
        elif self.coalescer is None:
            outcome = await self._fire(config, route, signal)
        else:
            outcome = await self._fire_or_join(config, key, route, signal)
        return Dispatched(outcome, alert.fingerprint, route.name, workflow_id, route.runbook)

    async def _fire_or_join(
        self, config: EngineConfig, key: Key, route: RouteConfig, signal: AlertSignal
    ) -> Outcome:
        """A duplicate of an alert attached to a running run joins a batch; one whose first
        alert is still on its way to Temporal waits for that answer first (so it is never
        answered before Temporal has recorded the incident)."""
        assert self.coalescer is not None
        first = self._firing.get(key)
        if first is not None:
            await asyncio.wait([first])
        if self.coalescer.offer(key, route, signal):
            return Outcome.COALESCED
        first = self._firing[key] = asyncio.get_running_loop().create_future()
        try:
            outcome = await self._fire(config, route, signal)
            self.coalescer.confirmed(key)
        finally:
            first.set_result(None)
            if self._firing.get(key) is first:
                del self._firing[key]
        return outcome

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Deliver the batched duplicates before the process exits."""
        if self.coalescer is not None:
            await self.coalescer.close(grace_seconds)

    async def _resolve(self, key: Key, signal: AlertSignal) -> Outcome:
        if self.coalescer is not None:
            # The duplicates batched before it reach the run first; after it, the key's next
            # firing alert is Temporal's to answer (the run may end now).
            await self.coalescer.drain(key)
            self.coalescer.forget(key)
        try:
            await self.client.get_workflow_handle(key.workflow_id).signal(
                RunbookWorkflow.alert_received, signal
            )
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            return Outcome.RESOLVED_NO_RUN
        return Outcome.RESOLVED_DELIVERED

    async def _fire(self, config: EngineConfig, route: RouteConfig, signal: AlertSignal) -> Outcome:
        """Signal-with-start: the first firing alert starts the run, later ones attach."""
        alert = signal.alert
        handle = await start_run(
            self.client,
            config,
            self.task_queue,
            route.runbook,
            RunbookInput(
                target=route.target,
                requested_by=f"alert:{alert.source}",
                reason=alert.summary or alert.name,
                alert=alert,
                parameters=route.parameters,
                close_gate_on_resolve=route.close_gate_on_resolve,
            ),
            summary=f"{route.runbook} on {route.target} for {alert.source} alert {alert.name}",
            signal=signal,
        )
        return Outcome.STARTED if started(handle) else Outcome.ATTACHED

    async def _deliver_batch(self, batch: Batch) -> None:
        """A batch goes the way its first alert went, so a run that ended meanwhile is
        started again rather than the duplicates lost."""
        route = batch.route
        if await self._fire(load_config(), route, batch.signal()) == Outcome.STARTED:
            RUNS_STARTED.labels(route.runbook).inc()
            run = workflow_id_for(route.runbook, route.target)
            log.info("%d batched duplicates started a new %s run %s (the last one ended)",
                     batch.count, route.runbook, run, extra={"workflow_id": run})  # fmt: skip
