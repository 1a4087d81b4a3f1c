"""Connection usage on a real, shared Postgres cluster: a plan's share of sessions is measured
against its own database's connections, not the whole cluster's (issue: never act on a stale
plan, scenario 4: on a shared cluster the share was understated and passed the 50% cap)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from temporalio.testing import ActivityEnvironment

from activities.postgres.models import TargetInput
from activities.postgres.sessions import get_connection_usage
from infra.local_postgres import PostgresServer
from tests.support import write_config


@pytest.fixture(scope="module")
def neighbours(postgres: PostgresServer) -> Iterator[tuple[str, str]]:
    """Two databases of one cluster: `metrics` is busy, `billing` is the target."""
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        for name in ("metrics", "billing"):
            conn.execute(f"CREATE DATABASE {name}")
    yield postgres.dsn("metrics"), postgres.dsn("billing")


async def test_the_share_is_of_the_targets_own_connections(
    neighbours: tuple[str, str], tmp_path: Path
) -> None:
    metrics_dsn, billing_dsn = neighbours
    os.environ["BILLING_DSN_TEST"] = billing_dsn
    write_config(tmp_path, '[targets.billing-db]\nkind = "postgres"\n'
                 'dsn = { env = "BILLING_DSN_TEST" }\n')  # fmt: skip
    busy = [psycopg.connect(metrics_dsn, autocommit=True) for _ in range(12)]
    mine = [psycopg.connect(billing_dsn, autocommit=True) for _ in range(4)]
    try:
        usage = await ActivityEnvironment().run(
            get_connection_usage, TargetInput(target="billing-db")
        )
    finally:
        for conn in busy + mine:
            conn.close()
    assert usage.database == "billing"
    # The cluster's count has the neighbours' 12; the database's count has only its own 4
    # and the engine's session (which it never ends).
    assert usage.database_total == len(mine) + 1
    assert usage.total >= len(busy) + len(mine) + 1
