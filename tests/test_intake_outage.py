"""The service while Temporal is down, for real: its own dev server, stopped mid-test and
started again on the same port. Readiness says 503 "Temporal unreachable" while liveness
stays 200; approvals, decisions and alert intake answer 503 JSON with Retry-After (senders
retry on 5xx); authentication still answers without Temporal; once the server is back, the
same service takes alerts again."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from infra.local_postgres import free_port
from infra.processes import server_process
from tests import payloads
from tests.support import BIN, SERVER_STARTUP, TOKENS, eventually, write_config
from workflows.names import SEARCH_ATTRIBUTES

SECRET = "outage-" + uuid.uuid4().hex
CONFIG = """
[targets.outage-db]
kind = "postgres"
dsn = { env = "OUTAGE_DB_DSN" }

[intake]
generic_secrets = [{ env = "OUTAGE_GENERIC_SECRET" }]

[[routes]]
name = "outage"
source = "generic"
match = { alertname = "OutageProbe" }
runbook = "pool_restart"
target = "outage-db"
"""


class DevServer:
    """A dev server on a fixed port, to stop and start again as an outage would."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.env: WorkflowEnvironment | None = None

    async def start(self) -> None:
        self.env = await WorkflowEnvironment.start_local(
            dev_server_startup_timeout=SERVER_STARTUP,
            data_converter=pydantic_data_converter,
            dev_server_existing_path=str(BIN / "temporal"),
            search_attributes=SEARCH_ATTRIBUTES,
            port=self.port,
        )

    async def stop(self) -> None:
        if self.env is not None:
            await self.env.shutdown()
            self.env = None


@pytest.fixture(scope="module")
async def temporal() -> AsyncIterator[DevServer]:
    server = DevServer(free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(scope="module")
def outage_service(temporal: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = write_config(tmp_path_factory.mktemp("outage"), CONFIG)
    port = free_port()
    env = {
        **os.environ,
        "REMEDIATE_CONFIG": str(config),
        "OUTAGE_GENERIC_SECRET": SECRET,
        "OUTAGE_DB_DSN": "postgresql://outage@127.0.0.1:1/none",
        "REMEDIATE_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal.port}",
        "REMEDIATE_TASK_QUEUE": f"outage-{uuid.uuid4().hex[:6]}",
        "REMEDIATE_API_PORT": str(port),
    }
    with server_process([sys.executable, "-m", "workers.service"], port, env):
        yield f"http://127.0.0.1:{port}"


def alert(fingerprint: str) -> tuple[bytes, dict[str, str]]:
    raw = payloads.encode(payloads.generic("firing", "OutageProbe", fingerprint, {}))
    return raw, payloads.generic_signed(SECRET, raw)


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["error"]


async def test_temporal_outage_is_503_with_retry_after_and_recovers(
    outage_service: str, temporal: DevServer
) -> None:
    bob = payloads.bearer(TOKENS["bob"])
    async with httpx.AsyncClient(base_url=outage_service, timeout=60) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        await temporal.stop()

        raw, signed = alert("o-1")
        health, live, listed, gate, decision, intake, forged = await asyncio.gather(
            http.get("/healthz"),
            http.get("/livez"),
            http.get("/approvals", headers=bob),
            http.get("/approvals/pool_restart-outage-db", headers=bob),
            http.post(
                "/approvals/pool_restart-outage-db/approve", json={"plan_id": "p"}, headers=bob
            ),
            http.post("/alerts/generic", content=raw, headers=signed),
            http.post("/alerts/generic", content=raw, headers={"X-Remediate-Signature": "v1=0"}),
        )
        assert health.status_code == 503 and "Temporal unreachable" in health.json()["error"]
        assert live.status_code == 200 and live.json() == {"status": "ok"}
        for response in (listed, gate, decision, intake):
            assert_unavailable(response)
        assert forged.status_code == 401  # authentication needs no Temporal

        await temporal.start()

        async def ready() -> bool:
            return (await http.get("/healthz")).status_code == 200

        await eventually(ready, seconds=60, every=0.5)
        # The sender's retry of the alert refused during the outage is taken now.
        retried = await http.post("/alerts/generic", content=raw, headers=signed)
        assert retried.status_code == 202, retried.text
        assert [r["outcome"] for r in retried.json()["results"]] == ["started"]
