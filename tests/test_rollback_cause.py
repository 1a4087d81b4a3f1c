"""Issue 13, scenario 2: rollback acts only on an outage its release could have caused. Real
components as in tests/test_rollback.py (a Temporal dev server, the demo app over HTTP, each
deploy platform's fake, the safety envelope, a webhook receiver for the pages):

- an outage that does not follow a deploy (the serving release went out long before the
  alert's `startsAt`, or after it) escalates and rolls nothing back;
- the alert's own start counts, and a manual start measures from its detection.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from infra.fakes.platforms import Platform
from tests.support import Receiver, record_history, start_signed, write_config
from tests.test_rollback import AUTO, CONFIG, Web, history, platform, web
from workers.worker import build_worker
from workflows.models import AlertContext, RunbookInput, RunReport, RunStatus
from workflows.rollback import RollbackWorkflow

__all__ = ["platform", "web"]  # the module-scoped fixtures of tests/test_rollback.py

Handle = WorkflowHandle[Any, RunReport]


def configure(
    tmp_path: Path,
    web: Web,
    platform: Platform,
    receiver: Receiver,
    auto: bool = False,
) -> None:
    """The rollback tests' config, pages going to `receiver`; `auto`: rollbacks to the last
    good release auto-approved."""
    os.environ[platform.token_env] = platform.token
    body = CONFIG.format(app=web.url, deploy=platform.deploy_toml()) + (AUTO if auto else "")
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
