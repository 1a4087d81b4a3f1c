"""Starting a run as the approval service does: the requester (an identity it authenticated,
or an alert sender whose signature it checked) signed into the run's input, so the run knows
its requester is who the input says. A run started any other way has an unverified requester.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)

from activities.config import EngineConfig
from workers.signing import start_token
from workflows.models import AlertSignal, RunbookInput, RunStatus
from workflows.names import (
    RUNBOOK_WORKFLOW_TYPES,
    SA_REQUESTED_BY,
    SA_RUNBOOK,
    SA_STATUS,
    SA_TARGET,
    workflow_id_for,
)


async def start_run(
    client: Client,
    config: EngineConfig,
    task_queue: str,
    runbook: str,
    params: RunbookInput,
    *,
    summary: str,
    signal: AlertSignal | None = None,
) -> WorkflowHandle[Any, Any]:
    """Start `runbook` on `params.target`, or reach the run already going there (one run per
    runbook and target): a manual start attaches, an alert's signal is delivered to it."""
    workflow_id = workflow_id_for(runbook, params.target)
    signed = params.model_copy(update={"requester_token": start_token(config, workflow_id, params)})
    delivery: dict[str, Any] = (
        {"start_signal": "alert_received", "start_signal_args": [signal]}
        if signal is not None
        else {"id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING}
    )
    return await client.start_workflow(
        RUNBOOK_WORKFLOW_TYPES[runbook],
        signed,
        id=workflow_id,
        task_queue=task_queue,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(SA_RUNBOOK, runbook),
                SearchAttributePair(SA_TARGET, params.target),
                SearchAttributePair(SA_REQUESTED_BY, params.requested_by),
                SearchAttributePair(SA_STATUS, RunStatus.DIAGNOSING.value),
            ]
        ),
        static_summary=summary,
        **delivery,
    )


def started(handle: WorkflowHandle[Any, Any]) -> bool:
    """Whether `start_run` started a new run (False: it reached the one already going)."""
    response = getattr(handle, "_start_workflow_response", None)
    return bool(getattr(response, "started", False))
