"""Plans whose world moved between approval and act (issue 13): the act step checks the plan's
precondition just before acting, refuses, and the run re-diagnoses; the new plan needs a new
decision. On the real components of test_key_rotation.py (dev server, Postgres, moto, the demo
app as the credential's consumer).

- key_rotation: while the gate waits, a person rotates the secret by hand (a new AWSCURRENT
  version with a new password on the role). The approved plan (made from the old version) is
  not acted on; the run plans again from the new version, and only a second approval rotates.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import uuid
from pathlib import Path
from typing import Any

import boto3
import psycopg
from psycopg import sql
from temporalio.testing import WorkflowEnvironment

from activities.postgres.logins import scram_verifier
from infra.local_postgres import PostgresServer
from tests.support import eventually, mint, write_config
from tests.test_key_rotation import APP_TARGET, PG_CREDENTIAL, USERS, health, make_login, start
from workers.worker import build_worker
from workflows.models import GateView, RunStatus
from workflows.runbook import RunbookWorkflow


async def next_gate(env: WorkflowEnvironment, workflow_id: str, after: str = "") -> GateView:
    handle = env.client.get_workflow_handle(workflow_id)

    async def probe() -> GateView | None:
        gate = await handle.query(RunbookWorkflow.pending_gate)
        return gate if gate is not None and gate.plan.plan_id != after else None

    return await eventually(probe, 60)


async def test_a_rotation_approved_before_someone_rotated_by_hand_is_planned_again(
    dev_env: WorkflowEnvironment, postgres: PostgresServer, app_factory: Any, tmp_path: Path
) -> None:
    login = make_login(postgres, "single_user")
    app = app_factory(DEMO_DB_SECRET_ARN=login.arn)
    os.environ["ROT_ADMIN_DSN"] = postgres.dsn(login.database)
    write_config(
        tmp_path,
        APP_TARGET.format(app=app.url, deadline=30)
        + PG_CREDENTIAL.format(arn=login.arn, strategy="single_user", users=[USERS[0]]),
    )
    token, queue = uuid.uuid4().hex, f"krd-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start(dev_env, queue, "app-db-credentials", f"krd-{token[:6]}", token=token)
        first = await next_gate(dev_env, handle.id)
        planned_from = first.plan.parameters["from_version"]
        # Meanwhile a person rotates by hand: a new password on the role, then the secret.
        by_hand = secrets.token_urlsafe(24)
        with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(USERS[0]), sql.Literal(scram_verifier(by_hand))
                )
            )
        moved = boto3.client("secretsmanager").put_secret_value(
            SecretId=login.arn, SecretString=json.dumps({**login.secret(), "password": by_hand})
        )["VersionId"]
        await handle.execute_update(RunbookWorkflow.approve, mint("bob", first, "approve"))
        second = await next_gate(dev_env, handle.id, after=first.plan.plan_id)
        assert token not in login.versions(), "the approved plan was not acted on"
        assert login.secret()["password"] == by_hand
        assert second.plan.parameters["from_version"] == moved != planned_from
        await handle.execute_update(RunbookWorkflow.approve, mint("carol", second, "approve"))
        report = await asyncio.wait_for(handle.result(), 120)
    assert report.status == RunStatus.REMEDIATED, report.summary
    drift = [s.summary for s in report.steps if s.kind == "plan_drift"]
    assert len(drift) == 1 and f"not {planned_from} that the approved plan" in drift[0]
    approved = [d.plan_id for d in report.decisions if d.outcome == "approved"]
    assert approved == [first.plan.plan_id, second.plan.plan_id]
    assert login.versions()[token] == ["AWSCURRENT"]
    assert login.versions()[moved] == ["AWSPREVIOUS"]
    assert health(app) == 200
