"""What Temporal recorded of the alerts delivered to a run: its `alert_received` signals, read
from the history, so a test or benchmark can count them without a worker running."""

from __future__ import annotations

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from workflows.models import AlertSignal


async def alert_signals(
    client: Client, workflow_id: str, run_id: str | None = None
) -> list[AlertSignal]:
    """Every alert signal of the run, in the order the run received them."""
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    signals: list[AlertSignal] = []
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            continue
        attributes = event.workflow_execution_signaled_event_attributes
        if attributes.signal_name == "alert_received":
            [signal] = await client.data_converter.decode(attributes.input.payloads, [AlertSignal])
            signals.append(signal)
    return signals


async def alerts_delivered(client: Client, workflow_id: str, task_queue: str) -> int:
    """Firing alerts delivered to every run of `workflow_id` on `task_queue`, batched
    duplicates counted."""
    total = 0
    query = f"WorkflowId = '{workflow_id}' AND TaskQueue = '{task_queue}'"
    async for execution in client.list_workflows(query):
        signals = await alert_signals(client, workflow_id, execution.run_id)
        total += sum(s.count for s in signals if s.status == "firing")
    return total
