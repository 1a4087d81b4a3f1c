"""key_rotation end to end: moto's server for Secrets Manager, a real Postgres, the demo app
as the credential's consumer (it reads its login from the secret at start and on restart), the
key service fake for API keys, a real Temporal dev server.

- Postgres, alternating users: the app ends up on the other role's new password; the old
  password is refused after the second gate's revoke; a second run with the same token changes
  nothing; no password is in the history.
- Postgres, single user, an app that stays unhealthy: the previous version is current again,
  the role's password is the old one again, escalated.
- Single user, cancelled while verifying: the rotation is undone the same way.
- API key, compromised: the exposed key is revoked first and refused, a new one is issued and
  reaches the app (restarted through its deploy provider), the report gives the exposure; no
  key value is in the history.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.postgres.logins import scram_verifier
from infra.local_postgres import PostgresServer, free_port
from infra.processes import server_process
from tests.support import BIN, DemoApp, eventually, mint, record_history, start_signed, write_config
from workers.worker import WORKFLOW_RUNNER, WORKFLOWS, build_worker
from workflows.key_rotation import KeyRotationWorkflow
from workflows.models import GateView, RunbookInput, RunReport, RunStatus
from workflows.runbook import RunbookWorkflow

Handle = WorkflowHandle[Any, RunReport]
RECORDED_ID = "key_rotation-app-db-credentials"
USERS = ("rot_app_a", "rot_app_b")

APP_TARGET = """
[targets.rot-api]
kind = "http"
health_url = "{app}/health"

[targets.rot-api.restart]
url = "{app}/admin/restart"
token = {{ env = "ROT_APP_TOKEN" }}

[runbooks.key_rotation]
verify_consecutive = 2
verify_interval_seconds = 0.3
verify_deadline_seconds = {deadline}
"""

PG_CREDENTIAL = """
[targets.rot-db]
kind = "postgres"
dsn = {{ env = "ROT_ADMIN_DSN" }}

[targets.app-db-credentials]
kind = "secret"

[targets.app-db-credentials.credential]
secret_arn = "{arn}"
consumers = ["rot-api"]

[targets.app-db-credentials.credential.source]
type = "postgres"
database = "rot-db"
strategy = "{strategy}"
users = {users}
"""

# The same app as a service on a deploy platform: restarted through its [deploy] provider.
DEPLOYED_APP = """
[targets.rot-web]
kind = "http"
health_url = "{app}/health"

[targets.rot-web.deploy]
provider = "generic"
current_url = "{app}/"
list_url = "{app}/"
rollback_url = "{app}/"
restart_url = "{app}/admin/restart"
token = {{ env = "ROT_APP_TOKEN" }}
"""

KEY_CREDENTIAL = """
[targets.payments-key]
kind = "secret"

[targets.payments-key.credential]
secret_arn = "{arn}"
consumers = ["rot-api"]

[targets.payments-key.credential.source]
type = "api_key"

[targets.payments-key.credential.source.provider]
provider = "generic"
create_url = "{keys}/v1/keys"
list_url = "{keys}/v1/keys"
revoke_url = "{keys}/v1/keys/{{id}}/revoke"
verify_url = "{keys}/v1/verify"
admin_token = {{ env = "ROT_KEYS_ADMIN" }}
"""


@dataclass
class Login:
    """The rotated database: its roles, and the secret the app reads."""

    server: PostgresServer
    database: str
    arn: str

    def secret(self, **version: str) -> dict[str, Any]:
        version = version or {"VersionStage": "AWSCURRENT"}  # moto needs it named
        value = boto3.client("secretsmanager").get_secret_value(SecretId=self.arn, **version)
        data = json.loads(value["SecretString"])
        assert isinstance(data, dict)
        return data

    def versions(self) -> dict[str, list[str]]:
        described = boto3.client("secretsmanager").describe_secret(SecretId=self.arn)
        stages: dict[str, list[str]] = described["VersionIdsToStages"]
        return stages

    def logs_in(self, login: dict[str, Any]) -> bool:
        info = make_conninfo(
            host="127.0.0.1", port=str(self.server.port), dbname=self.database,
            user=login["username"], password=login["password"], connect_timeout="5",
        )  # fmt: skip
        try:
            with psycopg.connect(info) as conn:
                conn.execute("SELECT count(*) FROM orders")
        except psycopg.OperationalError:
            return False
        return True

    def stored_passwords(self) -> dict[str, str | None]:
        with psycopg.connect(self.server.dsn(), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)", [list(USERS)]
            ).fetchall()
        return {name: password for name, password in rows}


def make_login(server: PostgresServer, strategy: str) -> Login:
    """A database whose tables a group role owns; USERS (or the first) log in as members."""
    database = f"rot_{uuid.uuid4().hex[:6]}"
    password = secrets.token_urlsafe(24)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'rot_app'").fetchone()
        if exists is None:
            conn.execute("CREATE ROLE rot_app NOLOGIN")
            for user in USERS:
                conn.execute(f"CREATE ROLE {user} LOGIN IN ROLE rot_app")
        for user in USERS:
            conn.execute(f"ALTER ROLE {user} PASSWORD NULL")
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(USERS[0]), sql.Literal(scram_verifier(password))
            )
        )
    with psycopg.connect(server.dsn(database), autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, total integer)")
        conn.execute("INSERT INTO orders (total) SELECT i FROM generate_series(1, 100) i")
        conn.execute("GRANT ALL ON orders TO rot_app")
    arn = boto3.client("secretsmanager").create_secret(
        Name=f"app-db-{database}",
        SecretString=json.dumps(
            {"engine": "postgres", "host": "127.0.0.1", "port": server.port,
             "dbname": database, "username": USERS[0], "password": password}
        ),
    )["ARN"]  # fmt: skip
    return Login(server, database, arn)


async def approve(env: WorkflowEnvironment, workflow_id: str, who: str) -> GateView:
    handle = env.client.get_workflow_handle(workflow_id)
    seen: set[str] = set()

    async def probe() -> GateView | None:
        gate = await handle.query(RunbookWorkflow.pending_gate)
        return gate if gate is not None and gate.plan.plan_id not in seen else None

    gate = await eventually(probe, 60)
    await handle.execute_update(RunbookWorkflow.approve, mint(who, gate, "approve"))
    return gate


async def start(
    env: WorkflowEnvironment, queue: str, target: str, workflow_id: str, **params: str
) -> Handle:
    return await start_signed(
        env.client,
        KeyRotationWorkflow.run,
        RunbookInput(target=target, requested_by="alice", parameters=params),
        id=workflow_id,
        task_queue=queue,
    )


def history_text(history: Any) -> str:
    return json.dumps(history.to_json_dict())


def health(app: DemoApp) -> int:
    return httpx.get(f"{app.url}/health", timeout=10).status_code


async def test_alternating_users_rotation_switches_the_app_and_revokes_the_old_login(
    dev_env: WorkflowEnvironment, postgres: PostgresServer, app_factory: Any, tmp_path: Path
) -> None:
    login = make_login(postgres, "alternating_users")
    old = login.secret()
    app = app_factory(DEMO_DB_SECRET_ARN=login.arn)
    assert health(app) == 200
    os.environ["ROT_ADMIN_DSN"] = postgres.dsn(login.database)
    write_config(
        tmp_path,
        APP_TARGET.format(app=app.url, deadline=30)
        + PG_CREDENTIAL.format(arn=login.arn, strategy="alternating_users", users=list(USERS)),
    )
    token = uuid.uuid4().hex
    queue = f"kr-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start(dev_env, queue, "app-db-credentials", RECORDED_ID, token=token)
        first = await approve(dev_env, handle.id, "bob")
        assert first.plan.action == "rotate_credential"
        assert first.plan.parameters["new_principal"] == USERS[1]
        assert "No downtime" in first.plan.expected_impact.summary
        second = await approve(dev_env, handle.id, "carol")
        assert second.plan.action == "revoke_credential"
        assert second.plan.parameters["principal"] == USERS[0]
        report = await asyncio.wait_for(handle.result(), 120)
        assert report.status == RunStatus.REMEDIATED, report.summary

        new = login.secret()
        assert new["username"] == USERS[1] and login.versions()[token] == ["AWSCURRENT"]
        assert login.logs_in(new), "the new password works"
        assert not login.logs_in(old), "the old password is refused after the revoke"
        assert health(app) == 200, "the app restarted onto the new login"
        assert {"approved", "switched", "verified"} <= set(report.timeline)

        recorded = await handle.fetch_history()
        text = history_text(recorded)
        for value in (old["password"], new["password"], postgres.password):
            assert value not in text
        await Replayer(
            workflows=WORKFLOWS,
            data_converter=pydantic_data_converter,
            workflow_runner=WORKFLOW_RUNNER,
        ).replay_workflow(recorded)
        if os.environ.get("RECORD_HISTORIES"):
            record_history(RECORDED_ID, recorded)

        # The same token again: already done, nothing changes (no version, no password).
        stored, versions = login.stored_passwords(), login.versions()
        again = await start(
            dev_env, queue, "app-db-credentials", f"kr-again-{uuid.uuid4().hex[:6]}", token=token
        )
        repeat = await asyncio.wait_for(again.result(), 60)
    assert repeat.status == RunStatus.NO_ACTION_NEEDED, repeat.summary
    assert login.stored_passwords() == stored and login.versions() == versions
    assert not repeat.decisions


def single_user_with_a_healthy_app(
    postgres: PostgresServer, app_factory: Any, tmp_path: Path
) -> tuple[Login, DemoApp]:
    """A single-user login, its consumer app healthy on it, and a config to rotate it."""
    login = make_login(postgres, "single_user")
    app: DemoApp = app_factory(DEMO_DB_SECRET_ARN=login.arn)
    os.environ["ROT_ADMIN_DSN"] = postgres.dsn(login.database)
    write_config(
        tmp_path,
        APP_TARGET.format(app=app.url, deadline=30)
        + PG_CREDENTIAL.format(arn=login.arn, strategy="single_user", users=[USERS[0]]),
    )
    return login, app


async def single_user_with_a_broken_app(
    postgres: PostgresServer, app_factory: Any, tmp_path: Path, deadline: float
) -> Login:
    """A single-user login whose consumer never gets healthy (a bad release answers 500
    whatever its credential), and a config that verifies for `deadline` seconds."""
    login = make_login(postgres, "single_user")
    app = app_factory(DEMO_DB_SECRET_ARN=login.arn)
    await asyncio.to_thread(
        httpx.post, f"{app.url}/debug/release", json={"deployment_id": "dpl_bad", "good": False}
    )
    os.environ["ROT_ADMIN_DSN"] = postgres.dsn(login.database)
    write_config(
        tmp_path,
        APP_TARGET.format(app=app.url, deadline=deadline)
        + PG_CREDENTIAL.format(arn=login.arn, strategy="single_user", users=[USERS[0]]),
    )
    return login


async def test_single_user_rotation_puts_the_previous_password_back_when_the_app_stays_down(
    dev_env: WorkflowEnvironment, postgres: PostgresServer, app_factory: Any, tmp_path: Path
) -> None:
    login = await single_user_with_a_broken_app(postgres, app_factory, tmp_path, deadline=3)
    old = login.secret()
    token = uuid.uuid4().hex
    queue = f"kr-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start(
            dev_env, queue, "app-db-credentials", f"kr-single-{token[:6]}", token=token
        )
        gate = await approve(dev_env, handle.id, "bob")
        report = await asyncio.wait_for(handle.result(), 120)
    assert "CAVEAT (single user)" in gate.plan.expected_impact.summary
    assert report.status == RunStatus.ESCALATED, report.summary
    assert "verification failed" in report.summary and "current again" in report.summary
    assert "AWSCURRENT" not in login.versions()[token], "the new version is no longer current"
    assert login.secret() == old and login.logs_in(old), "the old password works again"
    pending = login.secret(VersionId=token)
    assert not login.logs_in(pending), "the role no longer takes the new password"


async def test_compromised_api_key_is_revoked_first_then_replaced_and_audited(
    dev_env: WorkflowEnvironment, app_factory: Any, aws_env: str, tmp_path: Path
) -> None:
    port = free_port()
    admin, exposed = "adm_" + uuid.uuid4().hex, "sk_live_" + uuid.uuid4().hex
    keys = f"http://127.0.0.1:{port}"
    created = datetime(2026, 11, 1, tzinfo=UTC).isoformat()
    with server_process(
        [str(BIN / "python"), "-m", "infra.fakes.key_service", "--port", str(port)], port,
        quiet=True,
    ):  # fmt: skip
        scenario = {
            "admin_token": admin,
            "keys": [
                {"id": "key_exposed", "value": exposed, "created_at": created, "name": "payments"},
                {"id": "key_other", "value": "sk_other_" + uuid.uuid4().hex,
                 "created_at": created, "name": "someone-elses"},
            ],
        }  # fmt: skip
        (
            await asyncio.to_thread(httpx.post, f"{keys}/_fake/scenario", json=scenario)
        ).raise_for_status()
        arn = boto3.client("secretsmanager").create_secret(
            Name=f"payments-{uuid.uuid4().hex[:6]}",
            SecretString=json.dumps({"api_key": exposed, "key_id": "key_exposed"}),
        )["ARN"]
        app = app_factory(
            DEMO_API_KEY_SECRET_ARN=arn,
            DEMO_API_VERIFY_URL=f"{keys}/v1/verify",
        )
        os.environ["ROT_KEYS_ADMIN"] = admin
        write_config(
            tmp_path,
            APP_TARGET.format(app=app.url, deadline=30)
            + DEPLOYED_APP.format(app=app.url)
            + KEY_CREDENTIAL.format(arn=arn, keys=keys).replace('["rot-api"]', '["rot-web"]'),
        )
        queue = f"kr-{uuid.uuid4().hex[:6]}"
        async with build_worker(dev_env.client, queue):
            handle = await start(
                dev_env, queue, "payments-key", f"kr-key-{uuid.uuid4().hex[:6]}",
                mode="compromised",
            )  # fmt: skip
            gate = await approve(dev_env, handle.id, "bob")
            report = await asyncio.wait_for(handle.result(), 120)
            recorded = await handle.fetch_history()
        state = (await asyncio.to_thread(httpx.get, f"{keys}/_fake/state")).json()
    assert gate.plan.action == "revoke_compromised_credential"
    assert report.status == RunStatus.REMEDIATED, report.summary
    assert "exposed: key_exposed" in report.summary and "stopped working at" in report.summary
    by_id = {k["id"]: k["state"] for k in state["keys"]}
    assert by_id["key_exposed"] == "revoked"
    current = json.loads(
        boto3.client("secretsmanager").get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")[
            "SecretString"
        ]
    )
    assert by_id[current["key_id"]] == "active" and current["key_id"] != "key_exposed"
    steps = [s.kind for s in report.steps]
    assert steps.index("revoke") < steps.index("test"), "revoked before the new key is issued"
    assert any("restarted rot-web (deploy)" in s.summary for s in report.steps)
    audit = next(s for s in report.steps if s.kind == "audit")
    assert any("key_other" in w for w in audit.details["warnings"])
    text = history_text(recorded)
    assert exposed not in text and current["api_key"] not in text and admin not in text


async def test_a_rotation_cancelled_during_verification_is_undone(
    dev_env: WorkflowEnvironment, postgres: PostgresServer, app_factory: Any, tmp_path: Path
) -> None:
    login = await single_user_with_a_broken_app(postgres, app_factory, tmp_path, deadline=120)
    old = login.secret()
    token = uuid.uuid4().hex
    queue = f"kr-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start(
            dev_env, queue, "app-db-credentials", f"kr-cancel-{token[:6]}", token=token
        )
        await approve(dev_env, handle.id, "bob")

        async def verifying() -> bool:
            report = await handle.query(KeyRotationWorkflow.report)
            return report.status == RunStatus.VERIFYING

        await eventually(verifying, 60)
        assert login.versions()[token] == ["AWSCURRENT"]
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 60)
        report = await handle.query(KeyRotationWorkflow.report)
    assert report.status == RunStatus.CANCELLED, report.summary
    assert "rotation undone" in report.summary
    assert "AWSCURRENT" not in login.versions()[token]
    assert login.secret() == old and login.logs_in(old), "the old password works again"
