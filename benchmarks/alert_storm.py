"""An alert storm against the intake service: 10,000 duplicates of one alert plus 1,000
distinct alerts (50 of them routed, each to its own target), posted concurrently as
Alertmanager webhooks to a real service on a real Temporal dev server.

No worker runs on the storm's task queue, so the figures are the intake's own: a run counts
as started when Temporal has recorded its start, which is when the webhook is answered.
Duplicates of an alert already attached are answered "coalesced" and reach their run in
batches; at the end the runs' histories are read to check that every accepted alert reached
its run (none lost) and that each incident has exactly one run.

`--workers N` runs N service processes on N ports and the senders spread their connections
over them, as a load balancer would. Not uvicorn `--workers`: its processes share a socket
the parent bound without IPPROTO_TCP, so asyncio leaves Nagle on for accepted connections and
every answer waits ~40 ms for the client's delayed ACK (p50 44 ms at any load).

`--temporal-outage` stops the Temporal dev server for 10 s mid-storm and starts it again on
its persisted state; the senders retry 5xx answers and broken connections with backoff, as
Alertmanager, Grafana and PagerDuty do.

    .venv/bin/python -m benchmarks.alert_storm [--duplicates 10000] [--distinct 1000]
        [--workers 1] [--temporal-outage]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from benchmarks.dev_server import DevServer
from benchmarks.signing import APPROVALS_TOML, key_env
from benchmarks.storm_senders import ROUTED, Storm, Tally
from infra.local_postgres import free_port, wait_for_port
from tests.alert_history import alert_signals

ROOT = Path(__file__).resolve().parents[1]
SIGNING_KEYS = key_env()  # one key pair, shared by the service processes
OUTAGE_AFTER_SECONDS = 2.0
OUTAGE_SECONDS = 10.0
QUEUE = "storm"


def config(token_env: str) -> str:
    targets = "".join(
        f'[targets.storm-{i}]\nkind = "http"\nhealth_url = "http://127.0.0.1:9/health"\n'
        for i in [*range(ROUTED), "dup"]
    )
    routes = "".join(
        f'[[routes]]\nname = "r{i}"\nrunbook = "pool_restart"\ntarget = "storm-{i}"\n'
        f'match = {{ alertname = "Storm", shard = "{i}" }}\n'
        for i in [*range(ROUTED), "dup"]
    )
    return (
        targets
        + f'[intake]\nalertmanager_tokens = [{{ env = "{token_env}" }}]\n'
        + APPROVALS_TOML
        + routes
    )


def service(tmp: Path, temporal: str, token: str, port: int) -> subprocess.Popen[bytes]:
    """`python -m uvicorn` from this checkout (not an installed copy) on `port`."""
    path = tmp / "storm.toml"
    path.write_text(config("STORM_AM_TOKEN"))
    command = [sys.executable, "-m", "uvicorn", "workers.service:app", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning", "--no-access-log"]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REMEDIATE_CONFIG": str(path),
        "STORM_AM_TOKEN": token,
        **SIGNING_KEYS,
        "TEMPORAL_ADDRESS": temporal,
        "REMEDIATE_TASK_QUEUE": QUEUE,
    }
    quiet = subprocess.DEVNULL  # the SDK logs each retried RPC while Temporal is down
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=quiet, stderr=quiet)


async def outage(server: DevServer) -> None:
    await asyncio.sleep(OUTAGE_AFTER_SECONDS)
    server.stop()
    print(f"Temporal stopped {OUTAGE_AFTER_SECONDS:.0f} s into the storm", flush=True)
    await asyncio.sleep(OUTAGE_SECONDS)
    server.start()
    print(f"Temporal started again after {OUTAGE_SECONDS:.0f} s", flush=True)


async def check_runs(client: Client, tally: Tally) -> None:
    """Exactly one run per incident, and every accepted routed alert in its run's history."""
    runs: dict[str, int] = {}
    delivered = 0
    async for execution in client.list_workflows(f"TaskQueue = '{QUEUE}'"):
        runs[execution.id] = runs.get(execution.id, 0) + 1
        signals = await alert_signals(client, execution.id, execution.run_id)
        delivered += sum(s.count for s in signals if s.status == "firing")
    accepted = sum(n for outcome, n in tally.outcomes.items() if outcome != "unrouted")
    doubled = sum(1 for n in runs.values() if n > 1)
    print(f"runs in Temporal: {sum(runs.values())} for {len(runs)} incidents "
          f"(incidents with more than one run: {doubled})")  # fmt: skip
    lost, twice = max(accepted - delivered, 0), max(delivered - accepted, 0)
    print(f"routed alerts accepted: {accepted}, delivered to their runs: {delivered}, "
          f"lost: {lost}, delivered twice: {twice}")  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    token = uuid.uuid4().hex
    with tempfile.TemporaryDirectory() as tmp:
        server = DevServer(Path(tmp))
        server.start()
        ports = [free_port() for _ in range(args.workers)]
        processes = [service(Path(tmp), server.address, token, port) for port in ports]
        try:
            for port in ports:
                wait_for_port("127.0.0.1", port, 60)
            storm = Storm("127.0.0.1", ports, token, args.duplicates, args.distinct)
            outage_task = asyncio.create_task(outage(server)) if args.temporal_outage else None
            tally = await storm.run(args.concurrency)
            if outage_task is not None:
                await outage_task
            tally.print(args.workers, storm)
            await asyncio.sleep(2)  # the last batches' window, and their signal
            client = await Client.connect(server.address, data_converter=pydantic_data_converter)
            await check_runs(client, tally)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=60)
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duplicates", type=int, default=10_000)
    parser.add_argument("--distinct", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="service processes")
    parser.add_argument("--temporal-outage", action="store_true")
    asyncio.run(main(parser.parse_args()))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: see workers/cli.py (temporalio/sdk-python#300)
