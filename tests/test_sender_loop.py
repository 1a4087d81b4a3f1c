"""Closing the loop with the senders, end to end: real runs of pool_restart on a real Temporal
dev server, the real notify, silence and PagerDuty activities, Debian's Alertmanager binary,
and the local fakes of Slack's Web API and PagerDuty's REST API (infra/fakes/) as processes.
The target's own activities (sessions, verification, restart) are the recording fakes of
tests/fake_system.py: what is under test is what the run tells its senders.

- An Alertmanager alert's run holds a silence matching the alert while it acts (Alertmanager
  itself says the alert is silenced by it), and expires it when the run ends: remediated,
  escalated after a failed verification, or cancelled.
- A PagerDuty incident's run notes each gate, decision, action and verification on the
  incident (with the gate page's link), once each even through rate limiting, and resolves
  the incident once the remediation is verified.
- With a Slack app, the gate message is updated in place once decided (buttons gone) and
  the run's progress goes to its thread.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.alertmanager.silences import create_silence, expire_silence, extend_silence
from activities.notify.send import notify
from activities.pagerduty.incidents import resolve_incident
from tests.fake_system import CONFIG, FakeSystem
from tests.senders import ONCALL, Senders, senders_fixture  # noqa: F401 - the fixture
from tests.support import (
    eventually,
    mint,
    record_history,
    start_signed,
    wait_for_gate,
    write_config,
)
from workers.worker import WORKFLOW_RUNNER, WORKFLOWS
from workflows.models import AlertContext, RunbookInput, RunReport, RunStatus
from workflows.pool_restart import PoolRestartWorkflow
from workflows.safety_envelope import SafetyEnvelopeWorkflow

pytestmark = pytest.mark.timeout(120)

PAGES = "https://remediate.example.com"
PD_TOKEN = "pd-" + uuid.uuid4().hex
SLACK_TOKEN = "xoxb-" + uuid.uuid4().hex
CHANNEL = "C0REMEDIATE"
LABELS = {
    "alertname": "PostgresConnectionsSaturated",
    "service": "orders-db",
    "target": "orders-db",
    "severity": "page",
}

Handle = WorkflowHandle[Any, RunReport]


def senders_toml(senders: Senders) -> str:
    return f"""
[pages]
public_url = "{PAGES}"

[notify.slack_app]
token = {{ env = "SLACK_BOT_TOKEN_TEST" }}
channel = "{CHANNEL}"
api_url = "{senders.slack}/api"

[pagerduty]
token = {{ env = "PAGERDUTY_TOKEN_TEST" }}
from_email = "{ONCALL}"
api_url = "{senders.pagerduty}"

[silences]
alertmanager_url = "{senders.alertmanager}"
"""


@dataclass
class World:
    env: WorkflowEnvironment
    system: FakeSystem
    queue: str
    senders: Senders
    http: httpx.AsyncClient

    async def start(self, alert: AlertContext) -> Handle:
        wid = f"pool_restart-orders-db-{uuid.uuid4().hex[:8]}"
        params = RunbookInput(target="orders-db", requested_by="alice", alert=alert)
        return await start_signed(
            self.env.client, PoolRestartWorkflow.run, params, id=wid, task_queue=self.queue
        )

    async def approve(self, handle: Handle) -> None:
        gate = await wait_for_gate(handle)
        request = mint("bob", gate, "approve", "idle sessions, as planned")
        await handle.execute_update(PoolRestartWorkflow.approve, request)

    async def silences(self, workflow_id: str) -> list[dict[str, Any]]:
        """The engine's silences of this run, as Alertmanager lists them."""
        response = await self.http.get(f"{self.senders.alertmanager}/api/v2/silences")
        response.raise_for_status()
        return [
            s
            for s in response.json()
            if s["createdBy"] == "remediation-engine" and workflow_id in s["comment"]
        ]

    async def fake_state(self, fake: str) -> dict[str, Any]:
        response = await self.http.get(f"{getattr(self.senders, fake)}/_fake/state")
        state: dict[str, Any] = response.json()
        return state


@pytest.fixture
async def world(
    dev_env: WorkflowEnvironment, senders: Senders, tmp_path: Path
) -> AsyncIterator[World]:
    os.environ["PAGERDUTY_TOKEN_TEST"] = PD_TOKEN
    os.environ["SLACK_BOT_TOKEN_TEST"] = SLACK_TOKEN
    write_config(tmp_path, CONFIG.format(auto="") + senders_toml(senders))
    system = FakeSystem()
    system.planning_allowed.set()
    queue = f"senders-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(timeout=10) as http:
        await http.post(
            f"{senders.slack}/_fake/scenario",
            json={"token": SLACK_TOKEN, "channels": [CHANNEL], "rate_limit_next": 1},
        )
        async with Worker(
            dev_env.client,
            workflow_runner=WORKFLOW_RUNNER,
            task_queue=queue,
            workflows=[PoolRestartWorkflow, SafetyEnvelopeWorkflow],
            activities=[
                *system.activities(dev_env.client, fake_notify=False),  # type: ignore[list-item]
                *(notify, create_silence, expire_silence, extend_silence, resolve_incident),
            ],
        ):
            yield World(dev_env, system, queue, senders, http)


def alertmanager_alert() -> AlertContext:
    return AlertContext(
        source="alertmanager",
        name=LABELS["alertname"],
        fingerprint=uuid.uuid4().hex[:16],
        labels={**LABELS, "instance": f"db-{uuid.uuid4().hex[:6]}"},
        summary="orders-db connections above 80%",
    )


async def silenced_by(world: World, labels: dict[str, str]) -> list[str]:
    """Push the alert to Alertmanager and read back which silences mute it."""
    now = datetime.now(UTC)
    alert = {
        "labels": labels,
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=5)).isoformat(),
    }
    url = world.senders.alertmanager
    (await world.http.post(f"{url}/api/v2/alerts", json=[alert])).raise_for_status()

    async def muted() -> list[str] | None:
        response = await world.http.get(f"{url}/api/v2/alerts", params={"silenced": "true"})
        for found in response.json():
            if found["labels"] == labels and found["status"]["silencedBy"]:
                return list(found["status"]["silencedBy"])
        return None

    return await eventually(muted, 10)


async def test_silence_holds_while_the_run_acts_and_expires_when_remediated(
    world: World,
) -> None:
    alert = alertmanager_alert()
    handle = await world.start(alert)
    await wait_for_gate(handle)
    assert await world.silences(handle.id) == [], "no silence before the plan is approved"
    await world.approve(handle)

    async def active() -> list[dict[str, Any]] | None:
        return [s for s in await world.silences(handle.id) if s["status"]["state"] == "active"]

    (silence,) = await eventually(active, 20)
    assert sorted(
        (m["name"], m["value"], m["isRegex"], m["isEqual"]) for m in silence["matchers"]
    ) == sorted((k, v, False, True) for k, v in alert.labels.items())
    assert f"{PAGES}/ui/runs/{handle.id}" in silence["comment"]
    assert await silenced_by(world, alert.labels) == [silence["id"]]

    world.system.verifying_allowed.set()
    report = await handle.result()
    assert report.status == RunStatus.REMEDIATED
    (after,) = await world.silences(handle.id)
    assert after["id"] == silence["id"]
    assert after["status"]["state"] == "expired"
    kinds = [s.kind for s in report.steps]
    assert kinds.index("alert_silenced") < kinds.index("action") < kinds.index("silence_expired")
    await replays(handle, "pool_restart_silenced")


async def test_silence_expires_when_the_run_escalates(world: World) -> None:
    """Verification fails after the sessions, and again after the restart: the run escalates,
    and its silence ends with it."""
    world.system.verify_passes = False
    world.system.verifying_allowed.set()
    alert = alertmanager_alert()
    handle = await world.start(alert)
    await world.approve(handle)  # terminate the idle sessions
    await world.approve(handle)  # then restart the app
    report = await handle.result()
    assert report.status == RunStatus.ESCALATED
    (silence,) = await world.silences(handle.id)
    assert silence["status"]["state"] == "expired"
    assert [s.kind for s in report.steps].count("alert_silenced") == 1


async def test_silence_expires_when_the_run_is_cancelled(world: World) -> None:
    alert = alertmanager_alert()
    handle = await world.start(alert)
    await world.approve(handle)

    async def active() -> list[dict[str, Any]] | None:
        return [s for s in await world.silences(handle.id) if s["status"]["state"] == "active"]

    await eventually(active, 20)
    await eventually(lambda: _status_is(handle, RunStatus.VERIFYING), 20)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    (silence,) = await world.silences(handle.id)
    assert silence["status"]["state"] == "expired"


async def replays(handle: Handle, name: str) -> None:
    """The run's history replays on the current workflows (with RECORD_HISTORIES=1 it is kept
    for tests/test_replay.py, so a later change that breaks the senders' steps fails CI)."""
    history = await handle.fetch_history()
    await Replayer(
        workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=WORKFLOW_RUNNER
    ).replay_workflow(history)
    if os.environ.get("RECORD_HISTORIES"):
        record_history(name, history)


async def _status_is(handle: Handle, status: RunStatus) -> bool:
    return (await handle.query(PoolRestartWorkflow.report)).status == status


async def test_a_pagerduty_incident_gets_a_note_per_step_and_is_resolved(world: World) -> None:
    incident = "P" + uuid.uuid4().hex[:6].upper()
    # Rate-limited at first: the notes still arrive once each, the Slack message once.
    scenario = {"token": PD_TOKEN, "users": [ONCALL], "incidents": {incident: "triggered"}}
    await world.http.post(
        f"{world.senders.pagerduty}/_fake/scenario", json={**scenario, "rate_limit_next": 2}
    )
    alert = AlertContext(
        source="pagerduty",
        name="orders-db connections exhausted",
        fingerprint=incident,
        labels={"service": "orders-db"},
    )
    handle = await world.start(alert)
    world.system.verifying_allowed.set()
    await world.approve(handle)
    report = await handle.result()
    assert report.status == RunStatus.REMEDIATED

    state = await world.fake_state("pagerduty")
    assert state["incidents"][incident]["status"] == "resolved"
    notes = [n["content"] for n in state["notes"][incident]]
    assert len(notes) == 5, notes
    opened, decided, acted, verified, resolved = notes
    assert f"{PAGES}/ui/gates/{handle.id}" in opened
    assert "approval needed" in opened
    assert "approved by bob" in decided
    assert "acted: terminated 30 sessions" in acted
    assert "verification passed" in verified
    assert resolved.startswith("Resolved by the remediation engine: remediated")
    assert {c["from"] for c in state["calls"] if c["method"] != "GET"} == {ONCALL}
    assert sum(c["method"] == "POST" for c in state["calls"]) == 5
    assert "incident_resolved" in [s.kind for s in report.steps]
    # Nothing about PagerDuty's token in the run's history.
    history = await handle.fetch_history()
    assert PD_TOKEN not in history.to_json()
    assert SLACK_TOKEN not in history.to_json()
    await replays(handle, "pool_restart_pagerduty_resolved")


async def test_the_slack_gate_message_is_updated_and_progress_is_threaded(
    world: World,
) -> None:
    world.system.verifying_allowed.set()
    handle = await world.start(alertmanager_alert())
    await world.approve(handle)
    report = await handle.result()
    assert report.status == RunStatus.REMEDIATED

    # The fake's channel was emptied for this test (the `world` fixture's scenario).
    ours = (await world.fake_state("slack"))["messages"][CHANNEL]
    (gate,) = [m for m in ours if m["thread_ts"] is None]
    assert gate["edits"] == 1
    assert "approved by bob" in gate["text"]
    assert [b["type"] for b in gate["blocks"]] == ["section", "context"]  # no buttons
    replies = [m for m in ours if m["thread_ts"] == gate["ts"]]
    said = " | ".join(m["text"] for m in replies)
    assert "acted: terminated 30 sessions" in said
    assert "verification passed" in said
    assert f"<{PAGES}/ui/runs/{handle.id}|" in said  # each reply links to the run's page
    assert len(ours) == 1 + len(replies), "everything after the gate is in its thread"


async def test_the_silence_is_extended_while_the_run_lives_and_lapses_once_it_is_terminated(
    world: World, tmp_path: Path
) -> None:
    """A run terminated from outside cannot expire its silence. It lasts `ends_after` (here
    3 s) and the live run extends it every third of that: held well past 3 s while the run
    waits in verification, it lapses within 3 s of the run's termination."""
    toml = senders_toml(world.senders).replace("[silences]\n", "[silences]\nends_after = 3\n")
    write_config(tmp_path, CONFIG.format(auto="") + toml)
    alert = alertmanager_alert()
    handle = await world.start(alert)
    await world.approve(handle)  # verification then waits: the run lives on

    async def active() -> list[dict[str, Any]] | None:
        return [s for s in await world.silences(handle.id) if s["status"]["state"] == "active"]

    (first,) = await eventually(active, 20)
    await asyncio.sleep(4.5)  # past the end it was made with
    still = await active()
    assert still, "the silence lapsed while its run lived"
    (held,) = still
    assert held["id"] == first["id"]
    assert _at(held["endsAt"]) > _at(first["endsAt"])
    assert await silenced_by(world, alert.labels) == [held["id"]]

    await handle.terminate("an operator stopped it")

    async def lapsed() -> bool:
        (silence,) = await world.silences(handle.id)
        return bool(silence["status"]["state"] == "expired")

    await eventually(lapsed, 10)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
