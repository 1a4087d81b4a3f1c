"""The README's demo, timed against the running local stack (`make run` in another shell).

Exhausts the demo database through the demo app's leak endpoint, waits until the leaked
sessions count as stale, starts pool_restart as alice, and measures trigger -> awaiting
approval; then approves as bob through the approval service's HTTP API and measures
approval -> verified.

    source .stack/demo.env && .venv/bin/python -m benchmarks.demo_timings [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx
from temporalio.client import WorkflowHandle

from activities.config import load_config
from workers.api_client import ApprovalApi
from workers.settings import Settings, connect
from workflows.models import RunReport, RunStatus
from workflows.pool_restart import PoolRestartWorkflow

APP = "http://127.0.0.1:8088"


async def _until(handle: WorkflowHandle[PoolRestartWorkflow, RunReport], done: set[str]) -> float:
    while True:
        report = await handle.query(PoolRestartWorkflow.report)
        if report.status.value in done:
            return time.perf_counter()
        await asyncio.sleep(0.05)


async def one_run() -> tuple[float, float]:
    config = load_config()
    idle_seconds = config.runbooks.pool_restart.idle_older_than_seconds
    async with httpx.AsyncClient(base_url=APP, timeout=30) as app:
        leaked = (await app.post("/debug/leak", params={"connections": 150})).json()
        assert "slots are reserved" in leaked["stopped_by"] or leaked["opened"] == 150, leaked
        assert (await app.get("/health")).status_code == 503
    await asyncio.sleep(idle_seconds + 1)
    client = await connect()
    triggered = time.perf_counter()
    # As `remediate start` does it: through the approval service, as alice.
    started = await ApprovalApi(Settings().api_url, "demo-alice-token").start(
        "pool_restart", "orders-db", {}, dry_run=False, reason="demo timing"
    )
    handle = client.get_workflow_handle(
        started.workflow_id, run_id=started.run_id, result_type=RunReport
    )
    awaiting = await _until(handle, {RunStatus.AWAITING_APPROVAL.value})
    approved = time.perf_counter()
    await ApprovalApi(Settings().api_url, "demo-bob-token").decide(
        handle.id, "approve", "demo timing"
    )
    report = await handle.result()
    verified = time.perf_counter()
    assert report.status == RunStatus.REMEDIATED, report.summary
    return awaiting - triggered, verified - approved


async def main(runs: int) -> None:
    results = [await one_run() for _ in range(runs)]
    to_gate = [r[0] for r in results]
    to_verified = [r[1] for r in results]
    print(f"runs: {runs} (each: ~97 leaked connections, health 503, then the runbook)")
    print(f"trigger -> awaiting approval: median {statistics.median(to_gate) * 1000:.0f} ms")
    print(f"approval -> verified:         median {statistics.median(to_verified):.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main(parser.parse_args().runs))
