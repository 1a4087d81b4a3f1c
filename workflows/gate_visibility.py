"""The open gate, published to Temporal's visibility as it opens, counts an approval, and
closes: so `remediate pending`, GET /approvals and the oldest-wait gauge read one visibility
listing instead of asking every waiting run in turn (a query per run took 10 s for 1,000).

Search attributes (indexed, filterable, plain text in the server): the required group, when
the gate opened and its deadline. Memo (sealed by the payload codec like every payload): the
whole `GateView` (plan, effects, quorum so far), the same object the `pending_gate` query
answers, so a listing shows exactly what the run would say. Both are unset when the gate
closes. Upserts are commands: runs recorded before this change replay without them
(GATE_LISTING_PATCH), and listings ask those runs directly (workers/gate_listing.py).
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.models import GateView
    from workflows.names import MEMO_GATE, SA_GATE_DEADLINE, SA_GATE_OPENED_AT, SA_REQUIRED_GROUP

GATE_LISTING_PATCH = "gate-listing-v1"
# A plan this large (thousands of sessions) stays out of the memo, whose size the server
# bounds (2 MB by default, in every upsert's history event too); listings ask such a run.
MEMO_MAX_BYTES = 256 * 1024


def publish(view: GateView | None) -> None:
    """The gate as it is now (None: closed) into the run's search attributes and memo."""
    if not workflow.patched(GATE_LISTING_PATCH):
        return
    if view is None:
        workflow.upsert_memo({MEMO_GATE: None})
        workflow.upsert_search_attributes(
            [
                SA_REQUIRED_GROUP.value_unset(),
                SA_GATE_OPENED_AT.value_unset(),
                SA_GATE_DEADLINE.value_unset(),
            ]
        )
        return
    fits = len(view.model_dump_json()) <= MEMO_MAX_BYTES
    workflow.upsert_memo({MEMO_GATE: view if fits else None})
    workflow.upsert_search_attributes(
        [
            SA_REQUIRED_GROUP.value_set(view.required_group),
            SA_GATE_OPENED_AT.value_set(view.opened_at),
            SA_GATE_DEADLINE.value_set(view.abort_at),
        ]
    )
