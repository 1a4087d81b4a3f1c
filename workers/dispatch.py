"""Turn a routed alert into exactly one run per incident.

A firing alert is a signal-with-start on the runbook's deterministic workflow id: the first
starts the run, duplicates are delivered to it (and land in its audit trail). Temporal
decides atomically which happened, so many intake replicas need no lock of their own. A
resolved alert is only ever a signal: it never starts a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.config import EngineConfig
from workers.alert_payloads import IncomingAlert
from workers.routing import route_for
from workers.runs import start_run, started
from workflows.models import AlertSignal, RunbookInput
from workflows.names import (
    workflow_id_for,
)
from workflows.runbook import RunbookWorkflow


class Outcome(StrEnum):
    STARTED = "started"
    ATTACHED = "attached"
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


async def dispatch(
    client: Client, config: EngineConfig, task_queue: str, incoming: IncomingAlert
) -> Dispatched:
    alert = incoming.alert
    route = route_for(config, alert)
    if route is None:
        return Dispatched(Outcome.UNROUTED, alert.fingerprint)
    workflow_id = workflow_id_for(route.runbook, route.target)
    signal = AlertSignal(status=incoming.status, alert=alert, received_at=datetime.now(UTC))
    if incoming.status == "resolved":
        try:
            await client.get_workflow_handle(workflow_id).signal(
                RunbookWorkflow.alert_received, signal
            )
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            outcome = Outcome.RESOLVED_NO_RUN
        else:
            outcome = Outcome.RESOLVED_DELIVERED
        return Dispatched(outcome, alert.fingerprint, route.name, workflow_id, route.runbook)
    handle = await start_run(
        client,
        config,
        task_queue,
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
    outcome = Outcome.STARTED if started(handle) else Outcome.ATTACHED
    return Dispatched(outcome, alert.fingerprint, route.name, workflow_id, route.runbook)
