"""pool_restart on a MongoDB target: diagnose with serverStatus, remediate by an app restart.

Needs a real MongoDB: REMEDIATE_TEST_MONGO_URL, or a Docker engine for testcontainers. No
MongoDB server can be installed on the project's CI machines, so there these tests skip and
say so.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.mongo.connections import get_mongo_connection_usage
from activities.mongo.models import MongoTargetInput
from infra.local_postgres import docker_available, free_port
from tests.support import mint, start_signed, wait_for_gate, write_config
from workers.worker import build_worker
from workflows.models import RunbookInput, RunReport, RunStatus
from workflows.pool_restart import PoolRestartWorkflow

MONGO_URL_ENV = "REMEDIATE_TEST_MONGO_URL"


@pytest.fixture(scope="module")
def mongo_url() -> Iterator[str]:
    if os.environ.get(MONGO_URL_ENV):
        yield os.environ[MONGO_URL_ENV]
        return
    if not docker_available():
        pytest.skip(
            f"no MongoDB reachable: set {MONGO_URL_ENV}=mongodb://host:27017 or run where a "
            "Docker engine is available (this machine has neither; no MongoDB server can be "
            "installed here)"
        )
    from testcontainers.mongodb import MongoDbContainer

    with MongoDbContainer("mongo:7") as container:
        yield container.get_connection_url()


class Leaky:
    """An app that holds many Mongo connections until its restart hook is called."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.clients: list[MongoClient[dict[str, Any]]] = []

    def leak(self, count: int) -> None:
        for _ in range(count):
            client: MongoClient[dict[str, Any]] = MongoClient(self.url, minPoolSize=5)
            client.admin.command("ping")
            self.clients.append(client)

    def restart(self) -> None:
        while self.clients:
            self.clients.pop().close()


@pytest.fixture
def restart_hook(mongo_url: str) -> Iterator[tuple[str, Leaky]]:
    app = Leaky(mongo_url)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            app.restart()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"already_done": false}')

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/restart", app
    app.restart()
    server.shutdown()


def configure(tmp_path: Path, mongo_url: str, hook: str, threshold: float) -> None:
    os.environ["WIDGET_MONGO_URI_TEST"] = mongo_url
    write_config(
        tmp_path,
        f"""
        [targets.widget-mongo]
        kind = "mongodb"
        dsn = {{ env = "WIDGET_MONGO_URI_TEST" }}
        restart = {{ url = "{hook}" }}

        [runbooks.pool_restart]
        usage_threshold = {threshold}
        verify_consecutive = 2
        verify_interval_seconds = 0.5
        verify_deadline_seconds = 30
        """,
    )


async def test_server_status_connection_counts(
    tmp_path: Path, mongo_url: str, restart_hook: tuple[str, Leaky]
) -> None:
    hook, app = restart_hook
    configure(tmp_path, mongo_url, hook, 0.5)
    before = await ActivityEnvironment().run(
        get_mongo_connection_usage, MongoTargetInput(target="widget-mongo")
    )
    app.leak(4)
    after = await ActivityEnvironment().run(
        get_mongo_connection_usage, MongoTargetInput(target="widget-mongo")
    )
    assert after.current >= before.current + 4
    assert 0 < after.usage < 1


async def test_exhausted_mongo_is_remediated_by_a_gated_restart(
    dev_env: WorkflowEnvironment, tmp_path: Path, mongo_url: str, restart_hook: tuple[str, Leaky]
) -> None:
    hook, app = restart_hook
    configure(tmp_path, mongo_url, hook, 1.0)
    baseline = await ActivityEnvironment().run(
        get_mongo_connection_usage, MongoTargetInput(target="widget-mongo")
    )
    app.leak(10)  # each client holds a pool of 5 plus its monitoring connections
    # The alert threshold sits between the normal load and the leaked load.
    capacity = baseline.current + baseline.available
    configure(tmp_path, mongo_url, hook, (baseline.current + 20) / capacity)
    queue = f"mongo-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start_signed(
            dev_env.client,
            PoolRestartWorkflow.run,
            RunbookInput(target="widget-mongo", requested_by="alice"),
            id=f"pool_restart-widget-mongo-{uuid.uuid4().hex[:6]}",
            task_queue=queue,
        )
        gate = await wait_for_gate(handle)
        assert gate.plan.action == "restart_app"
        await handle.execute_update(PoolRestartWorkflow.approve, mint("bob", gate, "approve"))
        report: RunReport = await handle.result()
    assert report.status == RunStatus.REMEDIATED, report.summary
    assert app.clients == []
