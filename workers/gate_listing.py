"""Open gates, listed from Temporal's visibility: one `list_workflows` call (a page of up to
1,000 runs) with each run's memo, instead of a `pending_gate` query per waiting run.

A run publishes its open gate (workflows/gate_visibility.py) into its memo and search
attributes. A run waiting at a gate without that memo (it opened before this version, or its
plan was too large for a memo) is asked with the query, as every run used to be: only those.
The listing is as fresh as visibility (near-immediate on the dev server, about a second on a
cluster); a decision never trusts it, it asks the run (workers/approvals.py `decide_as`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio.client import Client, WorkflowExecution
from temporalio.service import RPCError, RPCStatusCode

from workflows.models import GateView, RunStatus
from workflows.names import MEMO_GATE, SA_GATE_OPENED_AT, SA_STATUS
from workflows.runbook import RunbookWorkflow

WAITING_QUERY = (
    f"{SA_STATUS.name} = '{RunStatus.AWAITING_APPROVAL.value}' AND ExecutionStatus = 'Running'"
)
# Temporal's own largest page of a visibility listing.
MAX_PAGE_SIZE = 1000
# Runs asked directly at once (those without the memo): a burst, not a thousand at once.
QUERY_CONCURRENCY = 16


class PageTokenError(ValueError):
    """A `next_page_token` this listing did not hand out."""

    def __init__(self) -> None:
        super().__init__(
            "next_page_token is not one GET /approvals returned (or it expired); list again "
            "without it"
        )


@dataclass(frozen=True)
class GatePage:
    gates: list[GateView]
    # Opaque (URL-safe base64), None on the last page. A page may hold fewer gates than its
    # size (a run whose gate closed as it was listed): follow the token until it is None.
    next_page_token: str | None


async def pending_gates(client: Client) -> list[GateView]:
    """Every open gate, page after page."""
    gates: list[GateView] = []
    token: str | None = None
    while True:
        page = await gates_page(client, MAX_PAGE_SIZE, token)
        gates += page.gates
        if page.next_page_token is None:
            return gates
        token = page.next_page_token


async def gates_page(client: Client, page_size: int, token: str | None = None) -> GatePage:
    """One page of open gates: one visibility call, plus a query per run without the memo."""
    listing = client.list_workflows(
        WAITING_QUERY, page_size=page_size, next_page_token=_decode_token(token)
    )
    try:
        await listing.fetch_next_page()
    except RPCError as err:
        if token is not None and err.status == RPCStatusCode.INVALID_ARGUMENT:
            raise PageTokenError() from None
        raise
    gates = await gates_of(client, listing.current_page or [])
    after = listing.next_page_token
    return GatePage(gates, _encode_token(after) if after else None)


async def gates_of(client: Client, executions: Sequence[WorkflowExecution]) -> list[GateView]:
    """The gate of each of these waiting runs, in their order; runs with none left out."""
    found = [await listed_gate(e) for e in executions]  # decoded here: no task per run
    unlisted = [i for i, gate in enumerate(found) if gate is None]
    asking = asyncio.Semaphore(QUERY_CONCURRENCY)

    async def ask(execution: WorkflowExecution) -> GateView | None:
        async with asking:
            return await asked_gate(client, execution)

    answers = await asyncio.gather(*(ask(executions[i]) for i in unlisted))
    for i, answer in zip(unlisted, answers, strict=True):
        found[i] = answer
    return [gate for gate in found if gate is not None]


async def listed_gate(execution: WorkflowExecution) -> GateView | None:
    """The gate the run published to its memo, or None if it published none."""
    view: GateView | None = await execution.memo_value(MEMO_GATE, None, type_hint=GateView)
    if view is None:
        return None
    # The run's identity from the server's record, not from anything the memo says.
    return view.model_copy(update={"workflow_id": execution.id, "run_id": execution.run_id})


async def asked_gate(
    client: Client, execution: WorkflowExecution, rpc_timeout: timedelta | None = None
) -> GateView | None:
    """The run's gate as it answers the query (None: between gates)."""
    handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
    return await handle.query(RunbookWorkflow.pending_gate, rpc_timeout=rpc_timeout)


def listed_opened_at(execution: WorkflowExecution) -> datetime | None:
    """When the run's open gate opened, from its search attribute (None: not published)."""
    return execution.typed_search_attributes.get(SA_GATE_OPENED_AT)


def _encode_token(raw: bytes) -> str:
    """Temporal's token, URL-safe, with a checksum: a token cut short or mistyped is told
    apart from a server error (Temporal's answer to a bad token varies by store)."""
    return f"{base64.urlsafe_b64encode(raw).decode()}.{_checksum(raw)}"


def _decode_token(token: str | None) -> bytes | None:
    if token is None:
        return None
    encoded, _, checksum = token.rpartition(".")
    try:
        raw = base64.urlsafe_b64decode(encoded.encode())
    except (binascii.Error, ValueError):
        raise PageTokenError() from None
    if not raw or checksum != _checksum(raw):
        raise PageTokenError()
    return raw


def _checksum(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:12]
