"""key_rotation's edges, end to end on the same real components as test_key_rotation.py
(Temporal dev server, Postgres, moto's server, the key service fake, the demo app):

- Postgres, compromised (alternating users): the attacker's open session is ended, the exposed
  password is refused, the other role's new login works and reaches the app, the revoke comes
  before the new login is tested; no password is in the history.
- API key, rotate: two gates; the old key is revoked once the second is approved, and stays
  valid (the run still remediated) when the second is rejected.
- create_pending_version run as a bare activity against a vendor that loses the answer to a
  create: the retry gets the same key back, one key and one secret version in all.
- Bad input (a target that is not a credential, an unknown mode, a short token) aborts before
  anything is touched.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.keys.models import KeyProviderError
from activities.secrets.models import CredentialInput
from activities.secrets.rotation import create_pending_version
from infra.local_postgres import PostgresServer, free_port
from infra.processes import server_process
from tests.support import BIN, eventually, mint, write_config
from tests.test_key_rotation import (
    APP_TARGET,
    KEY_CREDENTIAL,
    PG_CREDENTIAL,
    USERS,
    Login,
    approve,
    health,
    history_text,
    make_login,
    start,
)
from workers.worker import build_worker
from workflows.models import GateView, RunStatus
from workflows.runbook import RunbookWorkflow

CREATED = datetime(2026, 11, 1, tzinfo=UTC).isoformat()


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys_url() -> Iterator[str]:
    """The key service fake, one process for the module; each test sets its own scenario."""
    port = free_port()
    command = [str(BIN / "python"), "-m", "infra.fakes.key_service", "--port", str(port)]
    with server_process(command, port, quiet=True):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def queue() -> str:
    return f"kre-{uuid.uuid4().hex[:6]}"


def key_scenario(keys: str, **extra: Any) -> tuple[str, str]:
    """A fresh vendor holding one key in use (`key_old`); the admin token and that key's value."""
    admin, value = "adm_" + uuid.uuid4().hex, "sk_live_" + uuid.uuid4().hex
    scenario = {
        "admin_token": admin,
        "keys": [{"id": "key_old", "value": value, "created_at": CREATED, "name": "payments"}],
        **extra,
    }
    httpx.post(f"{keys}/_fake/scenario", json=scenario, timeout=10).raise_for_status()
    os.environ["ROT_KEYS_ADMIN"] = admin
    return admin, value


def key_secret(value: str) -> str:
    return str(
        boto3.client("secretsmanager").create_secret(
            Name=f"payments-{uuid.uuid4().hex[:8]}",
            SecretString=json.dumps({"api_key": value, "key_id": "key_old"}),
        )["ARN"]
    )


def secret_value(arn: str, **version: str) -> dict[str, Any]:
    version = version or {"VersionStage": "AWSCURRENT"}
    answer = boto3.client("secretsmanager").get_secret_value(SecretId=arn, **version)
    data = json.loads(answer["SecretString"])
    assert isinstance(data, dict)
    return data


def secret_versions(arn: str) -> dict[str, list[str]]:
    described = boto3.client("secretsmanager").describe_secret(SecretId=arn)
    stages: dict[str, list[str]] = described["VersionIdsToStages"]
    return stages


def vendor_keys(keys: str) -> dict[str, str]:
    state = httpx.get(f"{keys}/_fake/state", timeout=10).json()
    return {k["id"]: k["state"] for k in state["keys"]}


def vendor_calls(keys: str) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = httpx.get(f"{keys}/_fake/calls", timeout=10).json()
    return calls


def connect_as(login: Login, data: dict[str, Any]) -> psycopg.Connection[tuple[Any, ...]]:
    info = make_conninfo(
        host="127.0.0.1", port=str(login.server.port), dbname=login.database,
        user=data["username"], password=data["password"], application_name="attacker",
    )  # fmt: skip
    return psycopg.connect(info, autocommit=True)


async def gate_for(env: WorkflowEnvironment, workflow_id: str, action: str) -> GateView:
    """The open gate once it asks for `action` (not an earlier gate still showing)."""
    handle = env.client.get_workflow_handle(workflow_id)

    async def probe() -> GateView | None:
        gate = await handle.query(RunbookWorkflow.pending_gate)
        return gate if gate is not None and gate.plan.action == action else None

    return await eventually(probe, 60)


# -- 1. Postgres, compromised ----------------------------------------------------------------


async def test_compromised_postgres_login_ends_the_attackers_session_and_moves_to_the_other_role(
    dev_env: WorkflowEnvironment,
    postgres: PostgresServer,
    app_factory: Any,
    tmp_path: Path,
    queue: str,
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
    attacker = connect_as(login, old)
    try:
        assert attacker.execute("SELECT count(*) FROM orders").fetchone() == (100,)
        async with build_worker(dev_env.client, queue):
            handle = await start(
                dev_env, queue, "app-db-credentials", f"kre-pg-{uuid.uuid4().hex[:6]}",
                mode="compromised",
            )  # fmt: skip
            gate = await approve(dev_env, handle.id, "bob")
            report = await asyncio.wait_for(handle.result(), 120)
            recorded = await handle.fetch_history()
        assert gate.plan.action == "revoke_compromised_credential"
        assert gate.plan.parameters["revoke_principal"] == USERS[0]
        assert gate.plan.parameters["new_principal"] == USERS[1]
        assert gate.plan.parameters["sessions_of_exposed"] >= 1, "the attacker's session is seen"
        assert report.status == RunStatus.REMEDIATED, report.summary
        assert "exposed:" in report.summary and "stopped working at" in report.summary
        assert "open session(s) ended" in report.summary
        assert len(report.decisions) == 1, "compromised mode has a single gate"

        with pytest.raises(psycopg.OperationalError):
            attacker.execute("SELECT 1")
    finally:
        attacker.close()

    new = login.secret()
    assert new["username"] == USERS[1]
    assert login.versions()[gate.plan.parameters["new_version"]] == ["AWSCURRENT"]
    assert not login.logs_in(old), "the exposed password is refused"
    assert login.logs_in(new), "the other role's new password works"
    assert login.stored_passwords()[USERS[0]] is None
    assert health(app) == 200, "the app restarted onto the new login"

    steps = [s.kind for s in report.steps]
    assert steps.index("revoke") < steps.index("test"), "revoked before the new login is tested"
    revoked = report.steps[steps.index("revoke")].details["result"]
    assert "attacker" in [s["application_name"] for s in revoked["sessions"]]
    assert revoked["terminated"] >= 1 and revoked["rejected"]
    assert {"approved", "revoked", "switched", "verified"} <= set(report.timeline)
    assert report.timeline["revoked"] <= report.timeline["switched"]
    text = history_text(recorded)
    for value in (old["password"], new["password"], postgres.password):
        assert value not in text


# -- 2. API key, rotate ----------------------------------------------------------------------


@pytest.mark.parametrize("revoke", ["approve", "reject"])
async def test_api_key_rotation_revokes_the_old_key_only_when_the_second_gate_approves(
    dev_env: WorkflowEnvironment,
    app_factory: Any,
    keys_url: str,
    tmp_path: Path,
    queue: str,
    revoke: str,
) -> None:
    admin, old_value = key_scenario(keys_url)
    arn = key_secret(old_value)
    app = app_factory(DEMO_API_KEY_SECRET_ARN=arn, DEMO_API_VERIFY_URL=f"{keys_url}/v1/verify")
    assert health(app) == 200
    write_config(
        tmp_path,
        APP_TARGET.format(app=app.url, deadline=30) + KEY_CREDENTIAL.format(arn=arn, keys=keys_url),
    )
    token = uuid.uuid4().hex
    async with build_worker(dev_env.client, queue):
        handle = await start(
            dev_env, queue, "payments-key", f"kre-key-{token[:6]}", mode="rotate", token=token
        )
        first = await approve(dev_env, handle.id, "bob")
        assert first.plan.action == "rotate_credential"
        assert first.plan.parameters["from_principal"].startswith("key_old")
        second = await gate_for(dev_env, handle.id, "revoke_credential")
        assert second.plan.parameters["principal"].startswith("key_old")
        if revoke == "approve":
            await handle.execute_update(RunbookWorkflow.approve, mint("carol", second, "approve"))
        else:
            await handle.execute_update(
                RunbookWorkflow.reject,
                mint("carol", second, "reject", "a batch job still uses it"),
            )
        report = await asyncio.wait_for(handle.result(), 120)
        recorded = await handle.fetch_history()

    assert report.status == RunStatus.REMEDIATED, report.summary
    current = secret_value(arn)
    assert current["key_id"] != "key_old"
    assert secret_versions(arn)[token] == ["AWSCURRENT"]
    state = vendor_keys(keys_url)
    assert state[current["key_id"]] == "active"
    assert len(state) == 2, "exactly one key was created"
    assert health(app) == 200, "the app restarted onto the new key"
    if revoke == "approve":
        assert state["key_old"] == "revoked"
        assert "revoked and refused" in report.summary
    else:
        assert state["key_old"] == "active"
        assert "still valid" in report.summary
        assert "revoke" not in [s.kind for s in report.steps]
    text = history_text(recorded)
    assert old_value not in text and current["api_key"] not in text and admin not in text


# -- 3. create_pending_version, the answer lost ----------------------------------------------


async def test_create_pending_version_retried_after_a_lost_answer_makes_one_key_and_one_version(
    aws_env: str, keys_url: str, tmp_path: Path
) -> None:
    _, old_value = key_scenario(keys_url, lose_next_create=True)
    arn = key_secret(old_value)
    write_config(
        tmp_path,
        APP_TARGET.format(app="http://127.0.0.1:9", deadline=30)
        + KEY_CREDENTIAL.format(arn=arn, keys=keys_url),
    )
    token = uuid.uuid4().hex
    params = CredentialInput(target="payments-key", token=token)
    env = ActivityEnvironment()

    with pytest.raises(KeyProviderError) as lost:
        await env.run(create_pending_version, params)
    assert not lost.value.non_retryable, "a 500 is retried"
    made = vendor_keys(keys_url)
    assert len(made) == 2, "the vendor made the key although the answer was lost"
    assert token not in secret_versions(arn), "nothing stored yet"

    retried = await env.run(create_pending_version, params)
    assert retried.created and retried.version_id == token
    again = await env.run(create_pending_version, params)
    assert not again.created and again.version_id == token
    assert again.principal == retried.principal

    assert vendor_keys(keys_url) == made, "the retry got the same key back, not a second one"
    (new_id,) = set(made) - {"key_old"}
    versions = secret_versions(arn)
    assert len(versions) == 2 and versions[token] == ["AWSPENDING"]
    assert secret_value(arn, VersionId=token)["key_id"] == new_id
    assert secret_value(arn)["key_id"] == "key_old", "AWSCURRENT has not moved"
    creates = [
        c for c in vendor_calls(keys_url) if (c["method"], c["path"]) == ("POST", "/v1/keys")
    ]
    assert [c["idempotency_key"] for c in creates] == [token, token]
    assert [c["status"] for c in creates] == [500, 200]


# -- 4. bad input ----------------------------------------------------------------------------


async def test_bad_input_aborts_before_anything_changes(
    dev_env: WorkflowEnvironment,
    postgres: PostgresServer,
    aws_env: str,
    tmp_path: Path,
    queue: str,
) -> None:
    login = make_login(postgres, "alternating_users")
    os.environ["ROT_ADMIN_DSN"] = postgres.dsn(login.database)
    os.environ.setdefault("ROT_APP_TOKEN", "unused-" + uuid.uuid4().hex)
    write_config(
        tmp_path,
        APP_TARGET.format(app="http://127.0.0.1:9", deadline=30)
        + PG_CREDENTIAL.format(arn=login.arn, strategy="alternating_users", users=list(USERS)),
    )
    versions, stored = login.versions(), login.stored_passwords()
    runs = {
        "not-a-credential": ("rot-api", {"mode": "rotate", "token": uuid.uuid4().hex}),
        "bogus-mode": ("app-db-credentials", {"mode": "bogus", "token": uuid.uuid4().hex}),
        "short-token": ("app-db-credentials", {"mode": "compromised", "token": "short"}),
    }
    async with build_worker(dev_env.client, queue):
        handles = {
            case: await start(dev_env, queue, target, f"kre-bad-{case}-{uuid.uuid4().hex[:6]}", **p)
            for case, (target, p) in runs.items()
        }
        reports = {
            case: await asyncio.wait_for(handle.result(), 60) for case, handle in handles.items()
        }

    for case, report in reports.items():
        assert report.status == RunStatus.ABORTED, (case, report.summary)
        assert report.summary.startswith("bad input"), (case, report.summary)
        assert not report.decisions, case
        assert not any(s.kind in ("revoke", "action", "test") for s in report.steps), case
    assert 'kind = "secret"' in reports["not-a-credential"].summary
    assert "'bogus'" in reports["bogus-mode"].summary
    assert "token" in reports["short-token"].summary
    assert login.versions() == versions and login.stored_passwords() == stored
