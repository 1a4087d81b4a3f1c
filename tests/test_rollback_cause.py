"""Issue 13, scenario 2: rollback acts only on an outage its release could have caused. Real
components as in tests/test_rollback.py (a Temporal dev server, the demo app over HTTP, each
deploy platform's fake, the safety envelope, a webhook receiver for the pages):

- an outage that does not follow a deploy (the serving release went out long before the
  alert's `startsAt`, or after it) escalates and rolls nothing back;
- the alert's own start counts, and a manual start measures from its detection;
- `web` depends on `orders-db`: while a remediation holds orders-db's lease, a rollback of
  web waits, then diagnoses again and finds nothing to do once the database is fixed.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.safety import (
    LeaseRelease,
    LeaseRequest,
    LeaseResult,
    SafetyQuery,
    SafetyStatus,
    safety_workflow_id,
)
from infra.fakes.platforms import Platform
from tests.stand_in import AtItsGate
from tests.support import Receiver, eventually, mint, record_history, start_signed, write_config
from tests.test_rollback import AUTO, CONFIG, Web, history, platform, web
from workers.worker import WORKFLOW_RUNNER, WORKFLOWS, activities_for, build_worker
from workflows.models import AlertContext, RunbookInput, RunReport, RunStatus
from workflows.names import SA_TARGET
from workflows.rollback import RollbackWorkflow

__all__ = ["platform", "web"]  # the module-scoped fixtures of tests/test_rollback.py

Handle = WorkflowHandle[Any, RunReport]
HOLDER = "pool_restart-orders-db"
DEPENDS = """
[targets.orders-db]
kind = "postgres"
dsn = { env = "ORDERS_DB_DSN_UNUSED_HERE" }

[safety]
dependency_settle_seconds = 1
"""


def configure(
    tmp_path: Path,
    web: Web,
    platform: Platform,
    receiver: Receiver,
    auto: bool = False,
    depends: bool = False,
    abort_after: int | None = None,
) -> None:
    """The rollback tests' config, pages going to `receiver`; `auto`: rollbacks to the last
    good release auto-approved; `depends`: web depends on orders-db; `abort_after`: the
    gate's, in seconds."""
    os.environ[platform.token_env] = platform.token
    body = CONFIG.format(app=web.url, deploy=platform.deploy_toml()) + (AUTO if auto else "")
    if abort_after is not None:
        group = 'required_group = "engineering-leads"\n'
        body = body.replace(group, f"{group}remind_after = 1\nabort_after = {abort_after}\n")
    if depends:
        body = body.replace('/metrics"\n', '/metrics"\ndepends_on = ["orders-db"]\n', 1) + DEPENDS
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    write_config(tmp_path, body + f'\n[notify]\nwebhook_url = "{hook}"\n')


async def start(env: WorkflowEnvironment, queue: str, started: datetime | None) -> Handle:
    alert = None
    if started is not None:
        alert = AlertContext(
            source="alertmanager", name="SiteDown", fingerprint="sitedown-web", starts_at=started
        )
    return await start_signed(
        env.client,
        RollbackWorkflow.run,
        RunbookInput(target="web", requested_by="alice", alert=alert),
        id=f"rollback-web-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
    )


async def hold_orders_db(env: WorkflowEnvironment, queue: str) -> WorkflowHandle[Any, Any]:
    """Take orders-db's lease in the envelope the run consults, as a remediation there does."""
    envelope = await env.client.start_workflow(
        "SafetyEnvelopeWorkflow",
        id=safety_workflow_id(queue),
        task_queue=queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    lease = LeaseRequest(target="orders-db", runbook="pool_restart", holder=HOLDER, plan_id="p")
    assert (await envelope.execute_update("acquire", lease, result_type=LeaseResult)).granted
    return envelope


def ago(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)


def recency(report: RunReport) -> dict[str, Any]:
    """The figures of the run's "does the outage follow a deploy" diagnosis."""
    return next(s.details for s in report.steps if "follows_deploy" in s.details)


async def test_a_release_deployed_long_before_the_alert_started_is_not_rolled_back(
    dev_env: WorkflowEnvironment, web: Web, platform: Platform, tmp_path: Path, webhook: Receiver
) -> None:
    """The issue's outage: the serving release (broken here, so that only the new check stands
    between it and a rollback) went out 20 hours before the alert's startsAt."""
    configure(tmp_path, web, platform, webhook, auto=True)
    releases = history(newest_age=timedelta(hours=20))
    await platform.scenario(releases, current="rel-004", on_switch=f"{web.url}/debug/release")
    queue = f"rb-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        handle = await start(dev_env, queue, started=ago(minutes=5))
        report = await handle.result()
    assert report.status == RunStatus.ESCALATED, report.summary
    assert report.summary.startswith(
        f"outage does not follow a deploy (current {platform.id_of('rel-004')} created 19.9 h "
        "before the outage started; the window is 2.0 h); not rolling back"
    ), report.summary
    assert "web is down:" in report.summary  # and the diagnosis
    figures = recency(report)
    assert figures["follows_deploy"] is False
    assert figures["outage_start_from"] == "alertmanager alert SiteDown"
    assert abs(figures["deploy_lead_seconds"] - (20 * 3600 - 5 * 60)) < 120
    assert await platform.rollbacks_requested() == 0
    pages = [n for n in webhook.received if n["event"] == "escalation"]
    assert len(pages) == 1 and pages[0]["severity"] == "page"
    if os.environ.get("RECORD_HISTORIES") and platform.name == "vercel":
        record_history("rollback_not_after_deploy", await handle.fetch_history())


async def test_a_release_created_after_the_outage_began_is_not_rolled_back(
    dev_env: WorkflowEnvironment, web: Web, platform: Platform, tmp_path: Path, webhook: Receiver
) -> None:
    """Down for three hours, a release 30 minutes old: it did not cause the outage (a fix that
    did not work?). Measured from this run's detection it would have looked recent."""
    configure(tmp_path, web, platform, webhook, auto=True)
    releases = history(newest_age=timedelta(minutes=30))
    await platform.scenario(releases, current="rel-004", on_switch=f"{web.url}/debug/release")
    queue = f"rb-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        report = await (await start(dev_env, queue, started=ago(hours=3))).result()
    assert report.status == RunStatus.ESCALATED, report.summary
    assert "was created 2.5 h after the outage started, so it did not cause it" in (report.summary)
    assert await platform.rollbacks_requested() == 0


async def test_the_alerts_start_counts_not_when_the_run_found_it(
    dev_env: WorkflowEnvironment, web: Web, platform: Platform, tmp_path: Path, webhook: Receiver
) -> None:
    """A release 2.5 h old, an outage that began an hour after it (the alert fired 1.5 h ago
    and the run starts only now): the outage follows that deploy, so it is rolled back."""
    configure(tmp_path, web, platform, webhook, auto=True)
    releases = history(newest_age=timedelta(hours=2.5))
    await platform.scenario(releases, current="rel-004", on_switch=f"{web.url}/debug/release")
    queue = f"rb-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        report = await (await start(dev_env, queue, started=ago(hours=1.5))).result()
    assert report.status == RunStatus.REMEDIATED, report.summary
    figures = recency(report)
    assert figures["follows_deploy"] is True
    assert abs(figures["deploy_lead_seconds"] - 3600) < 120
    assert await platform.serving() == "rel-003"


async def test_a_manual_start_measures_from_its_own_detection(
    dev_env: WorkflowEnvironment, web: Web, platform: Platform, tmp_path: Path, webhook: Receiver
) -> None:
    configure(tmp_path, web, platform, webhook, auto=True)
    releases = history(newest_age=timedelta(hours=3))
    await platform.scenario(releases, current="rel-004", on_switch=f"{web.url}/debug/release")
    queue = f"rb-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        report = await (await start(dev_env, queue, started=None)).result()
    assert report.status == RunStatus.ESCALATED, report.summary
    assert "outage does not follow a deploy" in report.summary
    figures = recency(report)
    assert figures["outage_start_from"] == "this run's detection"
    assert figures["outage_started_at"] == report.timeline["detected"].isoformat()
    assert await platform.rollbacks_requested() == 0


async def test_a_rollback_waits_for_its_dependencys_remediation_and_diagnoses_again(
    dev_env: WorkflowEnvironment, web: Web, platform: Platform, tmp_path: Path, webhook: Receiver
) -> None:
    """The issue's pool exhaustion: web's /health fails because orders-db has no connection
    slots left, and web's current release is recent and healthy. While a remediation holds
    orders-db's lease (the test plays that run through the envelope: it takes the lease, then
    does what pool_restart's restart plan does, restarting the app's pool, and lets go), the
    rollback waits; once the database is fixed it diagnoses again and finds web up."""
    configure(tmp_path, web, platform, webhook, depends=True)
    releases = history(bad_newest=0)
    await platform.scenario(releases, current="rel-004", on_switch=f"{web.url}/debug/release")
    queue = f"rb-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(base_url=web.url) as app, build_worker(dev_env.client, queue):
        envelope = await hold_orders_db(dev_env, queue)
        try:
            leaked = (await app.post("/debug/leak", params={"connections": 200})).json()
            assert leaked["stopped_by"], leaked  # every slot the app may have is taken
            assert (await app.get("/health")).status_code == 503
            handle = await start(dev_env, queue, started=ago(minutes=2))

            async def waiting() -> bool:
                report = await handle.query(RollbackWorkflow.report)
                return report.status == RunStatus.WAITING

            await eventually(waiting, 30)
        finally:
            headers = {"Authorization": "Bearer web-admin", "Idempotency-Key": queue}
            (await app.post("/admin/restart", headers=headers)).raise_for_status()
            await envelope.execute_update(
                "release", LeaseRelease(target="orders-db", holder=HOLDER)
            )
        assert (await app.get("/health")).status_code == 200
        report = await handle.result()
    assert report.status == RunStatus.NO_ACTION_NEEDED, report.summary
    assert "after the remediation of a target it depends on" in report.summary
    kinds = [s.kind for s in report.steps]
    wait = report.steps[kinds.index("dependency_wait")]
    assert wait.summary == f"waiting for orders-db's remediation ({HOLDER}) to finish"
    assert kinds.index("dependency_wait") < kinds.index("dependency_clear")
    recheck = report.steps[kinds.index("dependency_clear") + 1]
    assert recheck.kind == "diagnosis" and not recheck.details["assessment"]["down"]
    assert "follows_deploy" not in json.dumps([s.details for s in report.steps])  # no plan
    assert await platform.rollbacks_requested() == 0
    if os.environ.get("RECORD_HISTORIES") and platform.name == "vercel":
        record_history("rollback_dependency_wait", await handle.fetch_history())


async def test_a_dependency_still_being_remediated_at_the_deadline_escalates(
    dev_env: WorkflowEnvironment, web: Web, platform: Platform, tmp_path: Path, webhook: Receiver
) -> None:
    """The wait is bounded by the gate's abort_after: a dependency still held then pages a
    person instead of the run acting on what may be its symptom."""
    configure(tmp_path, web, platform, webhook, depends=True, abort_after=3)
    await platform.scenario(history(), current="rel-004", on_switch=f"{web.url}/debug/release")
    queue = f"rb-{uuid.uuid4().hex[:6]}"
    async with build_worker(dev_env.client, queue):
        await hold_orders_db(dev_env, queue)
        report = await (await start(dev_env, queue, started=ago(minutes=2))).result()
    assert report.status == RunStatus.ESCALATED, report.summary
    assert report.summary.startswith(
        "web is down while a target it depends on is still being remediated: waiting for "
        f"orders-db's remediation ({HOLDER}) to finish (waited 0 min); not acting"
    ), report.summary
    assert await platform.rollbacks_requested() == 0
    assert [n["severity"] for n in webhook.received if n["event"] == "escalation"] == ["page"]


async def test_a_remediation_of_the_dependency_that_began_after_approval_stops_the_act(
    dev_env: WorkflowEnvironment, web: Web, platform: Platform, tmp_path: Path, webhook: Receiver
) -> None:
    """Found re-running the issue by hand: web's rollback was planned while orders-db's
    remediation had not begun (or sat at its gate, holding no lease), and acted on a database
    symptom. Now a run at its gate counts as a remediation in progress, and the dependency is
    checked again after approval: the approved rollback is dropped, the run waits, and once
    the database is fixed it finds web up. Nothing is rolled back."""
    configure(tmp_path, web, platform, webhook, depends=True)
    await platform.scenario(history(bad_newest=0), current="rel-004",
                            on_switch=f"{web.url}/debug/release")  # fmt: skip
    queue = f"rb-{uuid.uuid4().hex[:6]}"
    worker = Worker(
        dev_env.client,
        task_queue=queue,
        workflows=[*WORKFLOWS, AtItsGate],
        activities=activities_for(dev_env.client),
        workflow_runner=WORKFLOW_RUNNER,
    )
    async with httpx.AsyncClient(base_url=web.url) as app, worker:
        leaked = (await app.post("/debug/leak", params={"connections": 200})).json()
        assert leaked["stopped_by"], leaked
        handle = await start(dev_env, queue, started=ago(minutes=2))
        gate = await eventually(lambda: handle.query(RollbackWorkflow.pending_gate), 30)
        stand_in = await dev_env.client.start_workflow(
            AtItsGate.run,
            id=f"pool_restart-orders-db-{uuid.uuid4().hex[:6]}",
            task_queue=queue,
            search_attributes=TypedSearchAttributes([SearchAttributePair(SA_TARGET, "orders-db")]),
        )
        await handle.execute_update(RollbackWorkflow.approve, mint("bob", gate, "approve"))

        async def waiting() -> bool:
            report = await handle.query(RollbackWorkflow.report)
            return report.status == RunStatus.WAITING

        await eventually(waiting, 30)
        headers = {"Authorization": "Bearer web-admin", "Idempotency-Key": queue}
        (await app.post("/admin/restart", headers=headers)).raise_for_status()
        await stand_in.signal(AtItsGate.finish)
        report = await handle.result()
        envelope = dev_env.client.get_workflow_handle(safety_workflow_id(queue))
        status = await envelope.query(
            "status", SafetyQuery(target="web", runbook="rollback"), result_type=SafetyStatus
        )
    # The dropped plan did not act: it does not count against web's cooldown and budget.
    assert (status.actions_last_hour, status.cooldown_until) == (0, None)
    assert report.status == RunStatus.NO_ACTION_NEEDED, report.summary
    assert "after the remediation of a target it depends on" in report.summary
    kinds = [s.kind for s in report.steps]
    assert kinds.index("gate_approved") < kinds.index("approved_plan_dropped")
    wait = report.steps[kinds.index("dependency_wait")]
    assert wait.summary == (
        f"waiting for orders-db's remediation ({stand_in.id}) to finish; it has not acted yet"
    )
    assert await platform.rollbacks_requested() == 0
