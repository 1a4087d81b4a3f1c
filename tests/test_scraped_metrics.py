"""The service's gauges read from Temporal at scrape time (workers/scraped_metrics.py): the oldest
open gate's wait, here for a run that no worker answers (its gate's opening cannot be asked,
so its start stands in). The wait of a real gate, answered by a worker, is checked by the
alert-to-run test (tests/test_monitoring_alert.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from temporalio.client import Client, WorkflowExecution
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment

from tests.support import eventually
from workers import gate_listing, scraped_metrics
from workers.metrics import GATE_OLDEST_WAIT, GATES_PENDING
from workflows.models import RunbookInput, RunStatus
from workflows.names import POOL_RESTART, RUNBOOK_WORKFLOW_TYPES, SA_STATUS

T0 = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)


def test_the_oldest_wait_is_the_longest_and_none_is_zero() -> None:
    opened = [T0, T0 - timedelta(minutes=7), T0 - timedelta(seconds=30)]
    assert scraped_metrics.oldest_wait_seconds(T0, opened) == 420.0
    assert scraped_metrics.oldest_wait_seconds(T0, []) == 0.0
    # A gate opened "after" now by the server's clock is no negative wait.
    assert scraped_metrics.oldest_wait_seconds(T0, [T0 + timedelta(seconds=2)]) == 0.0


async def test_a_gate_no_worker_answers_counts_from_its_runs_start(
    dev_env: WorkflowEnvironment,
) -> None:
    """A run shown as AwaitingApproval on a task queue no worker polls: the scrape does not
    hang on its query (bounded by GATE_QUERY_TIMEOUT) and reports the wait from the run's
    start, an upper bound."""
    client = dev_env.client
    workflow_id = f"metrics-{uuid.uuid4().hex[:8]}"
    handle = await client.start_workflow(
        RUNBOOK_WORKFLOW_TYPES[POOL_RESTART],
        RunbookInput(target="nowhere", requested_by="test"),
        id=workflow_id,
        task_queue=f"no-worker-{uuid.uuid4().hex[:6]}",
        search_attributes=TypedSearchAttributes(
            [SearchAttributePair(SA_STATUS, RunStatus.AWAITING_APPROVAL.value)]
        ),
    )
    try:

        async def listed() -> WorkflowExecution | None:
            found = [e async for e in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
            return found[0] if found else None

        execution = await eventually(listed)
        opened = await scraped_metrics.gate_opened_at(client, execution)
        assert opened == execution.start_time

        await eventually(lambda: _counted(client))
        began = datetime.now(UTC)
        await scraped_metrics.refresh(client, "no-envelope-queue")
        took = (datetime.now(UTC) - began).total_seconds()
        print(f"scrape refresh with an unanswered gate: {took:.2f}s")
        waited = (datetime.now(UTC) - execution.start_time).total_seconds()
        assert GATES_PENDING._value.get() >= 1
        # The max over every waiting run of this server: at least this one's wait.
        assert GATE_OLDEST_WAIT._value.get() >= waited - took - 1
    finally:
        await handle.terminate()


async def _counted(client: Client) -> bool:
    return bool((await client.count_workflows(gate_listing.WAITING_QUERY)).count)
