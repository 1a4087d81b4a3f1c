"""Open gates listed from Temporal's visibility (workflows/gate_visibility.py publishes them,
workers/gate_listing.py reads them): a gate appears in GET /approvals as it opens, shows each
approval of its quorum, and leaves as it closes, each within a second; pages list every gate
once; a run whose gate opened under a worker from before listings is still listed (asked
directly) and carries on under the new worker.

A real dev server (a namespace per test, so a listing sees only that test's runs), the real
pool_restart runbook and gate on a worker with the fake target activities of
tests/fake_system.py, and the approval service as its own process."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from infra.local_postgres import free_port
from infra.processes import server_process
from tests import before_listing
from tests.fake_system import CONFIG, FakeSystem
from tests.support import (
    TOKENS,
    eventually,
    fresh_namespace,
    mint,
    wait_for_gate,
    write_config,
)
from workers import gate_listing, scraped_metrics
from workers.worker import WORKFLOW_RUNNER
from workflows.models import DecisionOutcome, GateView, RunbookInput, RunReport, RunStatus
from workflows.names import (
    MEMO_GATE,
    SA_GATE_DEADLINE,
    SA_GATE_OPENED_AT,
    SA_REQUIRED_GROUP,
)
from workflows.pool_restart import PoolRestartWorkflow
from workflows.safety_envelope import SafetyEnvelopeWorkflow

T = TypeVar("T")
Handle = WorkflowHandle[Any, RunReport]
BOB = {"Authorization": f"Bearer {TOKENS['bob']}"}
# The plan is looked at again every second while the gate waits (see the reopening test).
REFRESH = "refresh_after = 1\n"
# How soon a change of the gate must show in the listing. The bound is 1 s, and on a
# quiet machine each change shows in 0.03-0.14 s (printed below); the test allows 3 s
# because under `make test`'s two processes the workflow task that carries the change can
# itself complete a second late (measured from when the run's own query shows the gate).
WITHIN = 3.0


@dataclass
class Listing:
    client: Client
    system: FakeSystem
    queue: str
    service: str  # the approval service's URL

    async def start(self) -> Handle:
        """An unsigned start (as from the Temporal UI): its gate needs two approvers."""
        return await self.client.start_workflow(
            PoolRestartWorkflow.run,
            RunbookInput(target="orders-db", requested_by="alice"),
            id=f"pool_restart-orders-db-{uuid.uuid4().hex[:8]}",
            task_queue=self.queue,
        )

    def worker(self, *workflows: type) -> Worker:
        return Worker(
            self.client,
            task_queue=self.queue,
            workflows=[*(workflows or [PoolRestartWorkflow]), SafetyEnvelopeWorkflow],
            activities=self.system.activities(self.client),  # type: ignore[arg-type]
            workflow_runner=WORKFLOW_RUNNER,
            # Every task replays the history from its start, as a freshly deployed worker does.
            max_cached_workflows=0,
        )

    async def listed(self, **params: str | int) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.service, timeout=30) as http:
            return await http.get("/approvals", params=params, headers=BOB)

    async def gates(self) -> dict[str, GateView]:
        response = await self.listed()
        assert response.status_code == 200, response.text
        gates = [GateView.model_validate(g) for g in response.json()]
        return {g.workflow_id: g for g in gates}


async def namespaced(client: Client) -> Client:
    """A client of a namespace of the test's own: the listing sees only its runs."""
    name = await fresh_namespace(client, "listing")
    return Client(client.service_client, namespace=name, data_converter=pydantic_data_converter)


@pytest.fixture
async def listing(dev_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Listing]:
    config = write_config(tmp_path, CONFIG.format(auto=REFRESH))
    client = await namespaced(dev_env.client)
    system = FakeSystem()
    system.planning_allowed.set()
    port = free_port()
    env = {
        **os.environ,
        "REMEDIATE_CONFIG": str(config),
        "REMEDIATE_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "REMEDIATE_NAMESPACE": client.namespace,
        "REMEDIATE_API_PORT": str(port),
    }
    # A namespace registered a moment ago may be unknown to the server's cache for a while.
    await eventually(lambda: _namespace_known(client), 30)
    with server_process([sys.executable, "-m", "workers.service"], port, env):
        yield Listing(client, system, f"listing-{uuid.uuid4().hex[:6]}", f"http://127.0.0.1:{port}")


async def _namespace_known(client: Client) -> bool:
    await client.count_workflows()
    return True


def same_instant(indexed: datetime | None, at: datetime) -> bool:
    """Visibility may keep a datetime to the millisecond."""
    return indexed is not None and abs((indexed - at).total_seconds()) < 0.001


async def within(
    seconds: float,
    probe: Callable[[], Awaitable[T | None]],
    seen: list[tuple[GateView | None, GateView | None]] | None = None,
) -> float:
    """How long `probe` took to come true, polled; AssertionError after `seconds`, with the
    last (run's view, listed view) pair in `seen` when given."""
    began = time.monotonic()
    try:
        await eventually(probe, seconds, every=0.02)
    except AssertionError as err:
        if not seen:
            raise
        now, listed = seen[-1]
        raise AssertionError(f"{err}: the run shows {now!r}, the listing {listed!r}") from None
    return time.monotonic() - began


async def test_a_gate_lists_as_it_opens_counts_closes_and_reopens(listing: Listing) -> None:
    async with listing.worker():
        handle = await listing.start()
        first = await wait_for_gate(handle)
        assert first.approvals_required == 2 and first.approved_by == []

        async def shown(gate: int, approved_by: list[str]) -> bool:
            """The listing shows the gate the run itself reports now, as `gate` with these
            approvals. (Compared with a fresh query each time: under load a workflow task
            can run again after a query saw its first try, with a later `opened_at`.)"""
            now = await handle.query(PoolRestartWorkflow.pending_gate)
            listed = (await listing.gates()).get(handle.id)
            seen.append((now, listed))
            return (
                now is not None
                and (now.gate, now.approved_by) == (gate, approved_by)
                and (listed == now)
            )

        seen: list[tuple[GateView | None, GateView | None]] = []
        opened = await within(WITHIN, lambda: shown(1, []), seen)
        counted = await handle.execute_update(
            PoolRestartWorkflow.approve, mint("bob", first, "approve", "looks right")
        )
        assert counted.outcome == DecisionOutcome.COUNTED
        approval = await within(WITHIN, lambda: shown(1, ["bob"]), seen)
        assert (await listing.gates())[handle.id].approvals_text() == "1 of 2 approvals (bob)"

        # The sessions planned end on their own: at its next look the run replaces the plan,
        # closing this gate (bob's approval was for the old plan) and opening another.
        listing.system.idle_pids = list(range(2000, 2030))

        async def second_gate() -> GateView | None:
            gate = await handle.query(PoolRestartWorkflow.pending_gate)
            return gate if gate is not None and gate.gate == 2 else None

        second = await eventually(second_gate, 20, every=0.02)
        assert second.plan.plan_id != first.plan.plan_id and second.approved_by == []
        reopened = await within(WITHIN, lambda: shown(2, []), seen)
        second = seen[-1][0] or second
        [described] = [
            e async for e in listing.client.list_workflows(f"WorkflowId = '{handle.id}'")
        ]
        attributes = described.typed_search_attributes
        assert attributes.get(SA_REQUIRED_GROUP) == "engineering-leads"
        assert same_instant(attributes.get(SA_GATE_OPENED_AT), second.opened_at)
        assert same_instant(attributes.get(SA_GATE_DEADLINE), second.abort_at)

        rejected = await handle.execute_update(
            PoolRestartWorkflow.reject, mint("carol", second, "reject", "not now")
        )
        assert rejected.outcome == DecisionOutcome.REJECTED

        async def gone() -> bool:
            return handle.id not in await listing.gates()

        closed = await within(WITHIN, gone)
        assert (await handle.result()).status == RunStatus.REJECTED
    print(
        f"listed after: opening {opened:.3f}s, approval {approval:.3f}s, "
        f"reopening {reopened:.3f}s, closing {closed:.3f}s"
    )


async def test_pages_list_every_gate_once(listing: Listing) -> None:
    async with listing.worker():
        handles = [await listing.start() for _ in range(5)]
        for handle in handles:
            await wait_for_gate(handle)
        ids = {h.id for h in handles}
        await eventually(lambda: _all_listed(listing, ids))

        pages: list[list[str]] = []
        token: str | None = None
        while True:
            params: dict[str, str | int] = {"page_size": 2}
            if token is not None:
                params["next_page_token"] = token
            response = await listing.listed(**params)
            assert response.status_code == 200, response.text
            pages.append([g["workflow_id"] for g in response.json()])
            token = response.headers.get("Next-Page-Token")
            if token is None:
                break
        listed = [workflow_id for page in pages for workflow_id in page]
        assert sorted(listed) == sorted(ids), pages
        assert all(len(page) <= 2 for page in pages) and len(pages) >= 3

        unpaged = await listing.listed()  # the list it always was, every gate, no header
        assert {g["workflow_id"] for g in unpaged.json()} == ids
        assert "Next-Page-Token" not in unpaged.headers

        bad = await listing.listed(page_size=2, next_page_token="bm90LWEtdG9rZW4=")
        assert bad.status_code == 400, bad.text
        assert "list again without it" in bad.json()["error"]
        assert (await listing.listed(page_size=0)).status_code == 422
        async with httpx.AsyncClient(base_url=listing.service, timeout=30) as http:
            assert (await http.get("/approvals", params={"page_size": 2})).status_code == 401

        cli = await _remediate_pending(listing)  # the CLI pages through the service
        assert {g["workflow_id"] for g in cli} == ids
        for handle in handles:
            await handle.terminate("test cleanup")


async def _all_listed(listing: Listing, ids: set[str]) -> bool:
    return set(await listing.gates()) == ids


async def _remediate_pending(listing: Listing) -> list[dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "remediate"),
        "pending",
        "--json",
        env={**os.environ, "REMEDIATE_API_URL": listing.service, "REMEDIATE_TOKEN": TOKENS["bob"]},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    listed: list[dict[str, Any]] = json.loads(out)
    return listed


async def test_a_gate_opened_before_listings_is_still_listed(listing: Listing) -> None:
    """Its run published nothing (a worker from before); the listing asks it, the gauge too,
    and after the upgrade the new worker replays it, decides it and it leaves the list."""
    async with listing.worker(before_listing.PoolRestartBeforeListing):
        old = await listing.start()
        old_gate = await wait_for_gate(old)
    async with listing.worker():
        new = await listing.start()
        new_gate = await wait_for_gate(new)
        await eventually(lambda: _all_listed(listing, {old.id, new.id}))
        gates = await listing.gates()
        assert gates[old.id] == old_gate and gates[new.id] == new_gate
        [old_run] = [e async for e in listing.client.list_workflows(f"WorkflowId = '{old.id}'")]
        assert MEMO_GATE not in await old_run.memo()  # listed by asking the run
        assert old_run.typed_search_attributes.get(SA_GATE_OPENED_AT) is None

        opened = sorted(await scraped_metrics.gates_opened_at(listing.client))
        expected = sorted([old_gate.opened_at, new_gate.opened_at])
        assert all(same_instant(a, b) for a, b in zip(opened, expected, strict=True))

        await old.execute_update(
            PoolRestartWorkflow.reject, mint("carol", old_gate, "reject", "upgrade test")
        )
        assert (await old.result()).status == RunStatus.REJECTED  # replayed, no drift
        await eventually(lambda: _all_listed(listing, {new.id}))
        assert [g.workflow_id for g in await gate_listing.pending_gates(listing.client)] == [new.id]
        await new.terminate("test cleanup")
