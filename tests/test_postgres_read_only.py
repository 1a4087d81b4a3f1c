"""Read-only mode on a real Postgres: after entering it, writes from a fresh session and from
a session opened before both fail while reads work; after leaving it, writes work again."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from temporalio.testing import ActivityEnvironment

from activities.models import ReadOnlyInput
from activities.postgres import logins
from activities.postgres.read_only import check_writes, set_database_read_only
from infra.local_postgres import PostgresServer
from tests.support import write_config


@pytest.fixture(scope="module")
def ledger(postgres: PostgresServer) -> Iterator[str]:
    """A database of its own, so read-only mode never reaches the other tests' database."""
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE ledger_app LOGIN PASSWORD 'ledger-pw'")
        conn.execute("CREATE DATABASE ledger OWNER ledger_app")
    app_dsn = postgres.dsn("ledger", user="ledger_app", password="ledger-pw")
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE entries (id serial PRIMARY KEY, amount int NOT NULL)")
        conn.execute("INSERT INTO entries (amount) VALUES (10), (20)")
    os.environ["LEDGER_DSN_TEST"] = postgres.dsn("ledger")
    yield app_dsn
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute("ALTER DATABASE ledger RESET default_transaction_read_only")


def insert(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute("INSERT INTO entries (amount) VALUES (1)")


async def test_enter_refuses_writes_everywhere_and_exit_restores_them(
    ledger: str, tmp_path: Path
) -> None:
    write_config(
        tmp_path, '[targets.ledger-db]\nkind = "postgres"\ndsn = { env = "LEDGER_DSN_TEST" }\n'
    )
    env = ActivityEnvironment()
    before = psycopg.connect(ledger, autocommit=True, application_name="ledger-api")
    entered = await env.run(set_database_read_only, ReadOnlyInput(target="ledger-db", enabled=True))
    assert (entered.was_read_only, entered.read_only) == (False, True)
    assert before.info.backend_pid in entered.sessions_ended
    assert entered.statements[0] == 'ALTER DATABASE "ledger" SET default_transaction_read_only = on'

    with pytest.raises(psycopg.OperationalError):
        insert(before)  # the session from before was ended: it cannot write on
    with psycopg.connect(ledger, autocommit=True) as fresh:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            insert(fresh)
        assert fresh.execute("SELECT sum(amount) FROM entries").fetchone() == (30,)
    check = await env.run(check_writes, ReadOnlyInput(target="ledger-db", enabled=True))
    assert check.reads_ok and check.writes_refused

    # Entering again changes nothing and ends no one.
    with psycopg.connect(ledger, autocommit=True) as reader:
        again = await env.run(
            set_database_read_only, ReadOnlyInput(target="ledger-db", enabled=True)
        )
        assert again.was_read_only and again.sessions_ended == []
        assert reader.execute("SELECT 1").fetchone() == (1,)

    with psycopg.connect(ledger, autocommit=True) as read_only_session:
        left = await env.run(
            set_database_read_only, ReadOnlyInput(target="ledger-db", enabled=False)
        )
        assert (left.was_read_only, left.read_only) == (True, False)
        assert read_only_session.info.backend_pid in left.sessions_ended
    with psycopg.connect(ledger, autocommit=True) as fresh:
        insert(fresh)
        assert fresh.execute("SELECT count(*) FROM entries").fetchone() == (3,)
    check = await env.run(check_writes, ReadOnlyInput(target="ledger-db", enabled=False))
    assert check.reads_ok and not check.writes_refused
    with psycopg.connect(ledger) as probe:  # the write probe left nothing behind
        assert probe.execute("SELECT to_regclass('_remediation_write_probe')").fetchone() == (None,)


async def test_logins_change_while_the_database_is_read_only(
    ledger: str, postgres: PostgresServer
) -> None:
    """A leaked login must be revocable in the middle of a read-only hold: the engine's admin
    session changes passwords even though new sessions of the database are read-only."""
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute("ALTER DATABASE ledger SET default_transaction_read_only = on")
    try:
        async with await logins.admin(postgres.dsn("ledger")) as conn:
            await logins.set_password(conn, "ledger_app", "ledger-pw-2")
        with psycopg.connect(ledger.replace("ledger-pw", "ledger-pw-2")) as conn:
            assert conn.execute("SELECT count(*) FROM entries").fetchone() is not None
    finally:
        with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
            conn.execute("ALTER ROLE ledger_app PASSWORD 'ledger-pw'")
            conn.execute("ALTER DATABASE ledger RESET default_transaction_read_only")
