"""Runs parked at their gates: what 1,000 open gates cost the worker (RSS), the listings
(`remediate pending`, GET /approvals) and a new run on its way to its gate.

A dev server of its own (benchmarks/dev_server.py), a Postgres with ten stale idle sessions,
and the engine's own processes: `python -m workers.worker` (whose RSS is read from /proc) and
`python -m workers.service`. Each run is a real pool_restart that diagnoses the database and
parks at its gate with a plan to terminate those ten sessions (a quorum of two, as an
unsigned start needs; no approval ever comes). At 0, 100, 500 and 1,000 parked it prints the
worker's RSS, GET /approvals (median of 5) and `remediate pending --json` (one subprocess,
Python's start included; its start alone, `remediate --help`, is printed beside it), the
time for a new run to reach its gate (from its start to its gate's opening as the run
records it, median of 5), and at the end the old listing (a `pending_gate` query per run,
one after another) for comparison.

    .venv/bin/python -m benchmarks.parked_gates [--runs 1000] [--max-cached-workflows N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter

from benchmarks.dev_server import DevServer
from benchmarks.signing import APPROVALS_TOML, key_env
from infra.local_postgres import PostgresServer, free_port, postgres_server, wait_for_port
from tests.support import TOKENS, identities_toml
from workers.gate_listing import WAITING_QUERY, pending_gates
from workflows.models import GateView, RunbookInput
from workflows.runbook import RunbookWorkflow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUEUE = "parked"
CHECKPOINTS = (0, 100, 500, 1000)
STALE_SESSIONS = 10
STARTS_AT_ONCE = 50
T = TypeVar("T")

CONFIG = """
[targets.parked-db]
kind = "postgres"
dsn = {{ env = "PARKED_DB_DSN" }}
health_url = "http://127.0.0.1:9/health"

{approvals}
[runbooks.pool_restart]
usage_threshold = 0.05
idle_older_than_seconds = 1

# Parked runs wait quietly: no fresh look, no reminder, no deadline within the benchmark.
[runbooks.pool_restart.gate]
required_group = "engineering-leads"
refresh_after = 86400
max_plan_age = 86400
remind_after = 86400
abort_after = 172800

{identities}
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def median_seconds(measure: Callable[[], Awaitable[Any]], times: int) -> float:
    taken = []
    for _ in range(times):
        began = time.perf_counter()
        await measure()
        taken.append(time.perf_counter() - began)
    return statistics.median(taken)


async def poll(probe: Callable[[], Awaitable[T | None]], seconds: float, every: float) -> T:
    deadline = time.monotonic() + seconds
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {seconds}s")
        await asyncio.sleep(every)


class Bench:
    def __init__(self, client: Client, service: str, env: dict[str, str]) -> None:
        self.client, self.service, self.env = client, service, env
        self.parked: list[str] = []

    async def start(self) -> WorkflowHandle[Any, Any]:
        return await self.client.start_workflow(
            "PoolRestartWorkflow",
            RunbookInput(target="parked-db", requested_by="benchmark"),
            id=f"pool_restart-parked-db-{uuid.uuid4().hex[:10]}",
            task_queue=QUEUE,
        )

    async def waiting(self) -> int:
        return (await self.client.count_workflows(WAITING_QUERY)).count

    async def park(self, count: int) -> float:
        """Start `count` runs and wait until all wait at their gates; the seconds it took."""
        began, limit = time.perf_counter(), asyncio.Semaphore(STARTS_AT_ONCE)
        target = len(self.parked) + count

        async def one() -> None:
            async with limit:
                self.parked.append((await self.start()).id)

        await asyncio.gather(*(one() for _ in range(count)))

        async def all_waiting() -> bool:
            return await self.waiting() >= target

        await poll(all_waiting, 600, 0.25)
        return time.perf_counter() - began

    async def approvals(self) -> int:
        async with httpx.AsyncClient(base_url=self.service, timeout=60) as http:
            response = await http.get(
                "/approvals", headers={"Authorization": f"Bearer {TOKENS['bob']}"}
            )
        response.raise_for_status()
        return len(response.json())

    def cli(self, *args: str) -> tuple[float, str]:
        began = time.perf_counter()
        result = subprocess.run(
            [str(BIN / "remediate"), *args],
            env={**self.env, "REMEDIATE_API_URL": self.service, "REMEDIATE_TOKEN": TOKENS["bob"]},
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return time.perf_counter() - began, result.stdout

    async def fetch(self) -> None:
        """The visibility call alone: one page of up to 1,000 waiting runs, memos undecoded."""
        await self.client.list_workflows(WAITING_QUERY).fetch_next_page()

    async def to_gate(self) -> float:
        """A new run, from its start to its gate's opening (as the run records it)."""
        handle = await self.start()

        async def gate() -> GateView | None:
            return await handle.query(RunbookWorkflow.pending_gate)

        opened = await poll(gate, 60, 0.02)
        started = (await handle.describe()).start_time
        await handle.terminate("benchmark: measured")
        return (opened.opened_at - started).total_seconds()

    async def queried_one_by_one(self) -> float:
        """The listing before visibility: a `pending_gate` query per waiting run, in turn."""
        began = time.perf_counter()
        async for execution in self.client.list_workflows(WAITING_QUERY):
            await self.client.get_workflow_handle(execution.id).query(RunbookWorkflow.pending_gate)
        return time.perf_counter() - began


async def report(bench: Bench, worker_pid: int, parked: int, park_seconds: float) -> None:
    listed = await bench.approvals()
    http_seconds = await median_seconds(bench.approvals, 5)
    cli_seconds, out = await asyncio.to_thread(bench.cli, "pending", "--json")
    direct = len(await pending_gates(bench.client))
    direct_seconds = await median_seconds(lambda: pending_gates(bench.client), 5)
    fetch_seconds = await median_seconds(bench.fetch, 5)
    to_gate = statistics.median([await bench.to_gate() for _ in range(5)])
    print(
        f"{parked:>5} parked (park {park_seconds:6.1f} s): worker RSS {rss_mb(worker_pid):6.1f} MB"
        f" | GET /approvals {http_seconds * 1000:7.1f} ms ({listed} gates)"
        f" | remediate pending {cli_seconds * 1000:7.1f} ms ({out.count('workflow_id')} gates)"
        f" | new run to its gate {to_gate * 1000:6.1f} ms"
        f" | in-process: list_workflows {fetch_seconds * 1000:.1f} ms, with the memos decoded"
        f" {direct_seconds * 1000:.1f} ms ({direct} gates)",
        flush=True,
    )


@asynccontextmanager
async def processes(
    pg: PostgresServer, tmp: Path, max_cached: int | None
) -> AsyncIterator[tuple[int, Bench]]:
    """The dev server, the worker and the service; the worker's pid and the bench."""
    server = DevServer(tmp)
    server.start()
    config = tmp / "parked.toml"
    config.write_text(CONFIG.format(approvals=APPROVALS_TOML, identities=identities_toml()))
    port = free_port()
    env = {
        **os.environ,
        **key_env(),
        "PYTHONPATH": str(ROOT),
        "REMEDIATE_CONFIG": str(config),
        "REMEDIATE_TEMPORAL_ADDRESS": server.address,
        "REMEDIATE_TASK_QUEUE": QUEUE,
        "REMEDIATE_API_PORT": str(port),
        "REMEDIATE_LOG_FORMAT": "text",
        "PARKED_DB_DSN": pg.dsn("parked"),
    }
    if max_cached is not None:
        env["REMEDIATE_WORKER_MAX_CACHED_WORKFLOWS"] = str(max_cached)
    worker, service = (
        subprocess.Popen(
            [sys.executable, "-m", module],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for module in ("workers.worker", "workers.service")
    )
    try:
        wait_for_port("127.0.0.1", port, 60)
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        yield worker.pid, Bench(client, f"http://127.0.0.1:{port}", env)
    finally:
        for process in (service, worker):
            process.terminate()
            process.wait(timeout=60)
        server.stop()


async def main(runs: int, max_cached: int | None) -> None:
    with postgres_server(max_connections=100) as pg, tempfile.TemporaryDirectory() as tmp:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("CREATE ROLE app LOGIN PASSWORD 'parked-app-pw'")
            conn.execute("CREATE DATABASE parked OWNER app")
        stale = [
            psycopg.connect(pg.dsn("parked", user="app", password="parked-app-pw"))
            for _ in range(STALE_SESSIONS)
        ]
        await asyncio.sleep(1.5)  # idle for longer than idle_older_than_seconds
        try:
            async with processes(pg, Path(tmp), max_cached) as (worker_pid, bench):
                await run(bench, worker_pid, runs)
        finally:
            for conn in stale:
                conn.close()


async def run(bench: Bench, worker_pid: int, runs: int) -> None:
    startup, _ = await asyncio.to_thread(bench.cli, "--help")
    print(f"`remediate --help` (the CLI's start alone): {startup * 1000:.0f} ms", flush=True)
    await bench.to_gate()  # warm-up: imports, connections, the sandbox, the envelope
    parked, park_total = 0, 0.0
    for checkpoint in sorted({c for c in CHECKPOINTS if c <= runs} | {runs}):
        took = await bench.park(checkpoint - parked) if checkpoint > parked else 0.0
        parked, park_total = checkpoint, park_total + took
        await report(bench, worker_pid, parked, took)
    rate = parked / park_total if park_total else 0.0
    print(f"parked {parked} runs in {park_total:.1f} s ({rate:.0f} runs/s)")
    one_by_one = await bench.queried_one_by_one()
    print(f"the old listing (a query per run, in turn) at {parked} parked: {one_by_one:.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument(
        "--max-cached-workflows",
        type=int,
        default=None,
        help="the worker's REMEDIATE_WORKER_MAX_CACHED_WORKFLOWS (default: the setting's)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(args.runs, args.max_cached_workflows))
