"""An alert storm against the intake service: 10,000 duplicates of one alert plus 1,000
distinct alerts (50 of them routed, each to its own target), posted concurrently as
Alertmanager webhooks to a real service on a real Temporal dev server.

No worker runs on the storm's task queue, so the figures are the intake's own: a run counts
as started when Temporal has recorded its start, which is when the webhook is answered.

    .venv/bin/python -m benchmarks.alert_storm [--duplicates 10000] [--distinct 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from benchmarks.signing import APPROVALS_TOML, key_env
from infra.local_postgres import free_port, wait_for_port
from tests import payloads
from workflows.names import SEARCH_ATTRIBUTES

BIN = Path(sys.executable).parent
ROUTED = 50


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


async def storm(url: str, token: str, duplicates: int, distinct: int, concurrency: int) -> None:
    bodies = [
        payloads.encode(
            payloads.alertmanager("firing", {"alertname": "Storm", "shard": "dup"}, "d")
        )
    ] * duplicates
    bodies += [
        payloads.encode(
            payloads.alertmanager("firing", {"alertname": "Storm", "shard": str(i)}, f"s{i}")
        )
        for i in range(distinct)
    ]
    random.Random(7).shuffle(bodies)  # noqa: S311 - an interleaving, not a secret
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    errors: dict[str, int] = {}
    headers = {**payloads.bearer(token), "Content-Type": "application/json"}

    async def sender(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            started = time.perf_counter()
            try:
                response = await http.post("/alerts/alertmanager", content=body, headers=headers)
            except httpx.HTTPError as err:
                errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1
                continue
            latencies.append(time.perf_counter() - started)
            if response.status_code != 202:
                errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1
                continue
            for result in response.json()["results"]:
                outcomes[result["outcome"]] = outcomes.get(result["outcome"], 0) + 1

    limits = httpx.Limits(max_connections=concurrency)
    began = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.gather(*(sender(http) for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    print(
        f"alerts posted: {len(bodies)} ({duplicates} duplicates of one, {distinct} distinct, "
        f"{min(ROUTED, distinct)} of those routed), concurrency {concurrency}"
    )
    print(
        f"accepted: {sum(outcomes.values())} in {elapsed:.1f} s = "
        f"{sum(outcomes.values()) / elapsed:.0f} alerts/s"
    )
    print(
        f"webhook -> run started/attached latency: p50 "
        f"{statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.1f} ms"
    )
    print(f"outcomes: {dict(sorted(outcomes.items()))}")
    print(f"errors: {errors or 0}")
    print(
        f"runs started: {outcomes.get('started', 0)} "
        f"(expected 1 + {min(ROUTED, distinct)} routed distinct = {1 + min(ROUTED, distinct)})"
    )


async def main(duplicates: int, distinct: int, concurrency: int) -> None:
    token = uuid.uuid4().hex
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=SEARCH_ATTRIBUTES,
    )
    async with env:
        with tempfile.TemporaryDirectory() as tmp:
            await _run_against(env, Path(tmp), token, duplicates, distinct, concurrency)


async def _run_against(
    env: WorkflowEnvironment, tmp: Path, token: str, duplicates: int, distinct: int,
    concurrency: int,
) -> None:  # fmt: skip
    path = tmp / "storm.toml"
    path.write_text(config("STORM_AM_TOKEN"))
    port = free_port()
    service = subprocess.Popen(
        [sys.executable, "-m", "workers.service"],
        env={
            **os.environ,
            "REMEDIATE_CONFIG": str(path),
            "STORM_AM_TOKEN": token,
            **key_env(),
            "REMEDIATE_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            "REMEDIATE_TASK_QUEUE": "storm",
            "REMEDIATE_API_PORT": str(port),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port, 30)
        await storm(f"http://127.0.0.1:{port}", token, duplicates, distinct, concurrency)
        count = await env.client.count_workflows("TaskQueue = 'storm'")
        print(f"runs in Temporal (visibility): {count.count}")
    finally:
        service.terminate()
        service.wait(timeout=10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duplicates", type=int, default=10_000)
    parser.add_argument("--distinct", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(main(args.duplicates, args.distinct, args.concurrency))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: see workers/cli.py (temporalio/sdk-python#300)
