"""The intake and approval service as a real HTTP server, a real dev server and worker: each
source's documented payloads (firing, duplicate, resolved), authentication, and approvals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from infra.local_postgres import free_port
from infra.processes import server_process
from tests import payloads
from tests.support import (
    SIGNING_KEY_ENV,
    TOKENS,
    DemoApp,
    OrdersDatabase,
    eventually,
    slack_id,
    write_config,
)
from workers.webhook_auth import hmac_sha256_hex
from workers.worker import build_worker
from workflows.models import RunReport
from workflows.runbook import RunbookWorkflow

SECRETS = {
    "AM_TOKEN_TEST": "am-" + uuid.uuid4().hex,
    "AM_TOKEN_NEXT_TEST": "am-next-" + uuid.uuid4().hex,
    "GRAFANA_SECRET_TEST": "gf-" + uuid.uuid4().hex,
    "PD_SECRET_TEST": "pd-" + uuid.uuid4().hex,
    "PD_SECRET_NEXT_TEST": "pd-next-" + uuid.uuid4().hex,
    "GENERIC_SECRET_TEST": "gen-" + uuid.uuid4().hex,
    "SLACK_SIGNING_TEST": "slk-" + uuid.uuid4().hex,
}

TARGET = """
[targets.{name}]
kind = "postgres"
dsn = {{ env = "INTAKE_DB_DSN" }}
restart = {{ url = "{app}/admin/restart", token = {{ env = "INTAKE_APP_TOKEN" }} }}
"""

CONFIG = """
[intake]
alertmanager_tokens = [{{ env = "AM_TOKEN_TEST" }}, {{ env = "AM_TOKEN_NEXT_TEST" }}]
grafana_secrets = [{{ env = "GRAFANA_SECRET_TEST" }}]
grafana_timestamp_header = "X-Grafana-Alerting-Timestamp"
pagerduty_secrets = [{{ env = "PD_SECRET_TEST" }}, {{ env = "PD_SECRET_NEXT_TEST" }}]
generic_secrets = [{{ env = "GENERIC_SECRET_TEST" }}]
slack_signing_secrets = [{{ env = "SLACK_SIGNING_TEST" }}]

[notify]
slack_webhook = {{ env = "SLACK_WEBHOOK_TEST" }}

# Usage threshold 0 and no stale sessions: every run plans an app restart and waits at its
# gate, so duplicates and resolutions meet a live run.
[runbooks.pool_restart]
usage_threshold = 0.0
idle_older_than_seconds = 3600
verify_consecutive = 1
verify_interval_seconds = 0.2
verify_deadline_seconds = 1

[[routes]]
name = "am-pool"
source = "alertmanager"
match = {{ alertname = "PostgresTooManyConnections" }}
match_re = {{ service = "orders|payments" }}
runbook = "pool_restart"
target = "am-db"

[[routes]]
name = "grafana-pool"
source = "grafana"
match = {{ alertname = "DBConnectionsHigh" }}
runbook = "pool_restart"
target = "grafana-db"

[[routes]]
name = "pd-pool"
source = "pagerduty"
match = {{ service = "orders-api" }}
runbook = "pool_restart"
target = "pd-db"

[[routes]]
name = "generic-pool"
source = "generic"
match = {{ alertname = "QueuePoolLimit" }}
runbook = "pool_restart"
target = "generic-db"
close_gate_on_resolve = false

[[routes]]
name = "approvals"
source = "generic"
match = {{ alertname = "ApprovalFlow" }}
runbook = "pool_restart"
target = "approvals-db"
"""

TARGETS = ("am-db", "grafana-db", "pd-db", "generic-db", "approvals-db")


@dataclass
class Service:
    url: str
    client: Client

    async def report(self, workflow_id: str) -> RunReport:
        return await self.client.get_workflow_handle(workflow_id).query(RunbookWorkflow.report)

    async def running(self, workflow_id: str) -> bool:
        try:
            described = await self.client.get_workflow_handle(workflow_id).describe()
        except RPCError:
            return False
        return described.status == WorkflowExecutionStatus.RUNNING


class FakeSlack(ThreadingHTTPServer):
    """Slack's side, as documented: the incoming webhook and the interaction response_url."""

    posts: list[tuple[str, dict[str, Any]]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def received(self, path: str) -> list[dict[str, Any]]:
        return [body for where, body in self.posts if where == path]


class _SlackHandler(BaseHTTPRequestHandler):
    server: FakeSlack

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.posts.append((self.path, json.loads(body)))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    server = FakeSlack(("127.0.0.1", free_port()), _SlackHandler)
    server.posts = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ["SLACK_WEBHOOK_TEST"] = f"{server.url}/services/T0/B0/xyz"
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def service_process(
    dev_env: WorkflowEnvironment,
    orders_db: OrdersDatabase,
    demo_app: DemoApp,
    slack: FakeSlack,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str]]:
    os.environ.update(SECRETS)
    os.environ["INTAKE_DB_DSN"] = orders_db.admin_dsn
    os.environ["INTAKE_APP_TOKEN"] = demo_app.admin_token
    targets = "".join(TARGET.format(name=name, app=demo_app.url) for name in TARGETS)
    config = write_config(tmp_path_factory.mktemp("intake"), targets + CONFIG.format())
    port, queue = free_port(), f"intake-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "REMEDIATE_CONFIG": str(config),
        "REMEDIATE_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "REMEDIATE_TASK_QUEUE": queue,
        "REMEDIATE_API_PORT": str(port),
        # However long a gate takes to open, a duplicate after it is batched (coalesced).
        "REMEDIATE_COALESCE_FRESH_SECONDS": "300",
    }
    with server_process([sys.executable, "-m", "workers.service"], port, env):
        yield f"http://127.0.0.1:{port}", queue


@pytest.fixture
async def service(
    dev_env: WorkflowEnvironment, service_process: tuple[str, str]
) -> AsyncIterator[Service]:
    url, queue = service_process
    async with build_worker(dev_env.client, queue):
        yield Service(url, dev_env.client)
    for target in TARGETS:
        with contextlib.suppress(RPCError):
            await dev_env.client.get_workflow_handle(f"pool_restart-{target}").terminate()


async def post(
    service: Service, source: str, raw: bytes, headers: dict[str, str]
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        return await http.post(
            f"/alerts/{source}",
            content=raw,
            headers={"Content-Type": "application/json", **headers},
        )


async def gate_open(service: Service, workflow_id: str) -> bool:
    return (await service.report(workflow_id)).status == "AwaitingApproval"


def outcomes(response: httpx.Response) -> list[str]:
    assert response.status_code == 202, response.text
    return [r["outcome"] for r in response.json()["results"]]


async def run_incident(
    service: Service, source: str, firing: tuple[bytes, dict[str, str]],
    again: tuple[bytes, dict[str, str]], resolved: tuple[bytes, dict[str, str]], target: str,
) -> RunReport:  # fmt: skip
    workflow_id = f"pool_restart-{target}"
    assert outcomes(await post(service, source, *firing)) == ["started"]
    await eventually(lambda: gate_open(service, workflow_id))
    assert outcomes(await post(service, source, *again)) == ["coalesced"]
    # The resolution is delivered after the batched duplicate (it is never batched itself).
    assert outcomes(await post(service, source, *resolved)) == ["resolved_delivered"]
    report: RunReport = await service.client.get_workflow_handle(
        workflow_id, result_type=RunReport
    ).result()
    kinds = [s.kind for s in report.steps]
    assert kinds.count("alert_duplicate") == 1 and "alert_resolved" in kinds
    assert kinds.index("alert_duplicate") < kinds.index("alert_resolved")
    assert report.alerts_attached == 2
    assert report.requested_by == f"alert:{source}"
    # The sender's start of the problem (startsAt, a PagerDuty incident's created_at) reached
    # the run, and the signed start still binds that input.
    assert report.steps[0].details["alert"]["starts_at"] == "2026-11-23T03:00:00Z"
    assert "requester_unverified" not in kinds
    return report


async def test_alertmanager_firing_duplicate_resolved(service: Service) -> None:
    labels = {"alertname": "PostgresTooManyConnections", "service": "orders", "severity": "page"}

    def body(status: str) -> bytes:
        return payloads.encode(payloads.alertmanager(status, labels, "a1b2c3"))

    token, rotated = SECRETS["AM_TOKEN_TEST"], SECRETS["AM_TOKEN_NEXT_TEST"]
    report = await run_incident(
        service, "alertmanager",
        (body("firing"), payloads.bearer(token)),
        (body("firing"), payloads.basic(rotated)),  # basic auth, and the rotated token
        (body("resolved"), payloads.bearer(token)),
        "am-db",
    )  # fmt: skip
    assert report.status == "ResolvedBeforeApproval"


async def test_grafana_firing_duplicate_resolved(service: Service) -> None:
    labels = {"alertname": "DBConnectionsHigh", "grafana_folder": "db"}
    secret = SECRETS["GRAFANA_SECRET_TEST"]

    def signed(status: str) -> tuple[bytes, dict[str, str]]:
        raw = payloads.encode(payloads.grafana(status, labels, "g-123"))
        return raw, payloads.grafana_signed(secret, raw, str(int(time.time())))

    report = await run_incident(
        service, "grafana", signed("firing"), signed("firing"), signed("resolved"), "grafana-db"
    )
    assert report.status == "ResolvedBeforeApproval"


async def test_pagerduty_triggered_duplicate_resolved(service: Service) -> None:
    secrets = [SECRETS["PD_SECRET_TEST"], SECRETS["PD_SECRET_NEXT_TEST"]]

    def signed(event: str, keys: list[str]) -> tuple[bytes, dict[str, str]]:
        raw = payloads.encode(
            payloads.pagerduty(event, "Q1ABC", "Too many connections", "orders-api")
        )
        return raw, payloads.pagerduty_signed(keys, raw)

    report = await run_incident(
        service, "pagerduty", signed("incident.triggered", secrets[:1]),
        signed("incident.triggered", secrets),  # two signatures while a secret rotates
        signed("incident.resolved", secrets[1:]), "pd-db",
    )  # fmt: skip
    assert report.status == "ResolvedBeforeApproval"


async def test_generic_resolution_is_recorded_but_the_route_keeps_the_gate(
    service: Service,
) -> None:
    secret = SECRETS["GENERIC_SECRET_TEST"]
    workflow_id = "pool_restart-generic-db"

    def signed(status: str) -> tuple[bytes, dict[str, str]]:
        raw = payloads.encode(payloads.generic(status, "QueuePoolLimit", "q-1", {"app": "api"}))
        return raw, payloads.generic_signed(secret, raw)

    assert outcomes(await post(service, "generic", *signed("firing"))) == ["started"]
    await eventually(lambda: gate_open(service, workflow_id))
    assert outcomes(await post(service, "generic", *signed("firing"))) == ["coalesced"]
    assert outcomes(await post(service, "generic", *signed("resolved"))) == ["resolved_delivered"]

    async def resolution_recorded() -> bool:
        return "alert_resolved" in [s.kind for s in (await service.report(workflow_id)).steps]

    await eventually(resolution_recorded)
    assert await gate_open(service, workflow_id)  # close_gate_on_resolve = false


async def test_unrouted_and_resolved_without_a_run_are_accepted_not_started(
    service: Service,
) -> None:
    token = SECRETS["AM_TOKEN_TEST"]
    unrouted = payloads.alertmanager("firing", {"alertname": "DiskFull", "service": "x"}, "d1")
    assert outcomes(await post(service, "alertmanager", payloads.encode(unrouted),
                               payloads.bearer(token))) == ["unrouted"]  # fmt: skip
    wrong_service = payloads.alertmanager(
        "firing", {"alertname": "PostgresTooManyConnections", "service": "search"}, "d2"
    )
    assert outcomes(
        await post(service, "alertmanager", payloads.encode(wrong_service), payloads.bearer(token))
    ) == ["unrouted"]
    resolved = payloads.alertmanager(
        "resolved", {"alertname": "PostgresTooManyConnections", "service": "payments"}, "d3"
    )
    assert outcomes(
        await post(service, "alertmanager", payloads.encode(resolved), payloads.bearer(token))
    ) == ["resolved_no_run"]
    assert not await service.running("pool_restart-am-db")


@pytest.mark.parametrize(
    ("source", "headers", "status"),
    [
        ("alertmanager", {}, 401),
        ("alertmanager", {"Authorization": "Bearer wrong"}, 401),
        ("alertmanager", {"Authorization": "Basic !!notbase64"}, 401),
        ("grafana", {"X-Grafana-Alerting-Signature": "00" * 32}, 401),
        (
            "grafana",
            {"X-Grafana-Alerting-Signature": "sig", "X-Grafana-Alerting-Timestamp": "1"},
            401,
        ),
        ("pagerduty", {"X-PagerDuty-Signature": "v1=" + "00" * 32}, 401),
        ("pagerduty", {}, 401),
        ("generic", {"X-Remediate-Signature": "v1=abc"}, 401),
    ],
)
async def test_unauthenticated_webhooks_start_nothing(
    service: Service, source: str, headers: dict[str, str], status: int
) -> None:
    raw = {
        "alertmanager": payloads.alertmanager(
            "firing", {"alertname": "PostgresTooManyConnections", "service": "orders"}, "u1"
        ),
        "grafana": payloads.grafana("firing", {"alertname": "DBConnectionsHigh"}, "u2"),
        "pagerduty": payloads.pagerduty("incident.triggered", "QX", "t", "orders-api"),
        "generic": payloads.generic("firing", "QueuePoolLimit", "u3", {}),
    }[source]
    response = await post(service, source, payloads.encode(raw), headers)
    assert response.status_code == status
    assert "error" in response.json()
    assert not any([await service.running(f"pool_restart-{t}") for t in TARGETS])


async def test_stale_generic_signature_and_malformed_payloads(service: Service) -> None:
    secret = SECRETS["GENERIC_SECRET_TEST"]
    raw = payloads.encode(payloads.generic("firing", "QueuePoolLimit", "s1", {}))
    stale = await post(
        service, "generic", raw, payloads.generic_signed(secret, raw, time.time() - 3600)
    )
    assert stale.status_code == 401
    malformed = b'{"status": "burning", "name": "", "fingerprint": "x"}'
    response = await post(service, "generic", malformed, payloads.generic_signed(secret, malformed))
    assert response.status_code == 422 and "status" in response.json()["error"]
    not_json = b"\xff\x00{"
    response = await post(
        service, "alertmanager", not_json, payloads.bearer(SECRETS["AM_TOKEN_TEST"])
    )
    assert response.status_code == 422
    assert not await service.running("pool_restart-generic-db")


async def test_approvals_over_http(service: Service) -> None:
    secret = SECRETS["GENERIC_SECRET_TEST"]
    workflow_id = "pool_restart-approvals-db"
    raw = payloads.encode(payloads.generic("firing", "ApprovalFlow", "ap-1", {}))
    assert outcomes(await post(service, "generic", raw, payloads.generic_signed(secret, raw))) == [
        "started"
    ]
    await eventually(lambda: gate_open(service, workflow_id))
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        assert (await http.get("/approvals")).status_code == 401
        listed = await http.get("/approvals", headers=payloads.bearer(TOKENS["bob"]))
        [gate] = [g for g in listed.json() if g["workflow_id"] == workflow_id]
        plan_id = gate["plan"]["plan_id"]
        path = f"/approvals/{workflow_id}/approve"

        async def approve(who: str, body: dict[str, Any]) -> httpx.Response:
            return await http.post(path, json=body, headers=payloads.bearer(TOKENS.get(who, who)))

        assert (await approve("forged-token", {"plan_id": plan_id})).status_code == 401
        stale_plan = await approve("bob", {"plan_id": "0123456789abcdef"})
        assert stale_plan.status_code == 409 and "review it again" in stale_plan.json()["error"]
        outsider = await approve("alice", {"plan_id": plan_id})
        assert outsider.status_code == 403 and "required group" in outsider.json()["error"]
        approved = await approve("bob", {"plan_id": plan_id, "reason": "go"})
        assert approved.status_code == 200, approved.text
        assert approved.json()["outcome"] == "approved"
        assert approved.json()["decided_by"] == "bob"
        metrics = (await http.get("/metrics")).text
        assert 'remediate_alerts_total{outcome="started",source="generic"}' in metrics
        assert 'remediate_decisions_total{kind="approve",result="approved"} 1.0' in metrics
        assert 'remediate_runs_finished{status="ResolvedBeforeApproval"}' in metrics
        assert (await http.get("/healthz")).json() == {"status": "ok"}


async def test_end_hold_over_http_needs_a_token_and_a_holding_run(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        path = "/runs/read_only-nowhere/end-hold"
        refused = await http.post(path, json={}, headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 401
        bob = {"Authorization": f"Bearer {TOKENS['bob']}"}
        missing = await http.post(path, json={"reason": "x"}, headers=bob)
        assert missing.status_code == 404 and "no remediation" in missing.json()["error"]


async def test_cli_decides_through_the_service_without_the_signing_key(service: Service) -> None:
    secret = SECRETS["GENERIC_SECRET_TEST"]
    workflow_id = "pool_restart-approvals-db"
    raw = payloads.encode(payloads.generic("firing", "ApprovalFlow", "ap-2", {}))
    assert outcomes(await post(service, "generic", raw, payloads.generic_signed(secret, raw))) == [
        "started"
    ]
    await eventually(lambda: gate_open(service, workflow_id))
    env = {k: v for k, v in os.environ.items() if k not in (SIGNING_KEY_ENV, "REMEDIATE_CONFIG")}
    env |= {"REMEDIATE_API_URL": service.url, "REMEDIATE_TOKEN": TOKENS["bob"]}

    async def cli(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "remediate"),
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        return process.returncode or 0, out.decode(), err.decode()

    code, out, err = await cli("pending", "--json")
    assert code == 0, err
    assert workflow_id in [g["workflow_id"] for g in json.loads(out)]
    code, out, err = await cli("reject", workflow_id, "--reason", "false alarm")
    assert code == 0, err
    assert out.startswith("rejected plan")
    report: RunReport = await service.client.get_workflow_handle(
        workflow_id, result_type=RunReport
    ).result()
    assert report.status == "Rejected" and report.decisions[0].decided_by == "bob"


def slack_click(
    button: dict[str, Any], user: str, response_url: str
) -> tuple[bytes, dict[str, str]]:
    """A block_actions interaction as Slack posts it, signed as Slack signs it."""
    interaction = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "T0"},
        "api_app_id": "A0",
        "container": {"type": "message", "message_ts": "1700000000.000100"},
        "response_url": response_url,
        "actions": [
            {
                "type": "button",
                "action_id": button["action_id"],
                "block_id": "gate",
                "value": button["value"],
                "action_ts": "1700000001.000200",
            }
        ],
    }
    body = urlencode({"payload": json.dumps(interaction)}).encode()
    timestamp = str(int(time.time()))
    signature = hmac_sha256_hex(SECRETS["SLACK_SIGNING_TEST"], f"v0:{timestamp}:".encode() + body)
    return body, {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": f"v0={signature}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


async def test_slack_buttons_decide_exactly_the_plan_they_showed(
    service: Service, slack: FakeSlack
) -> None:
    secret = SECRETS["GENERIC_SECRET_TEST"]
    workflow_id = "pool_restart-approvals-db"
    raw = payloads.encode(payloads.generic("firing", "ApprovalFlow", "slack-1", {}))
    assert outcomes(await post(service, "generic", raw, payloads.generic_signed(secret, raw))) == [
        "started"
    ]
    await eventually(lambda: gate_open(service, workflow_id))

    async def gate_message() -> dict[str, Any] | None:
        for body in slack.received("/services/T0/B0/xyz"):
            if "blocks" in body and workflow_id in json.dumps(body):
                return body
        return None

    message = await eventually(gate_message)
    [actions] = [b for b in message["blocks"] if b["type"] == "actions"]
    approve, reject = actions["elements"]
    response_url = f"{slack.url}/actions/{uuid.uuid4().hex}"

    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        body, headers = slack_click(approve, slack_id("bob"), response_url)
        forged = {**headers, "X-Slack-Signature": "v0=" + "0" * 64}
        assert (
            await http.post("/slack/interactions", content=body, headers=forged)
        ).status_code == 401
        stale = {**headers, "X-Slack-Request-Timestamp": str(int(time.time()) - 3600)}
        assert (
            await http.post("/slack/interactions", content=body, headers=stale)
        ).status_code == 401

        async def answers() -> list[dict[str, Any]]:
            return slack.received(response_url.removeprefix(slack.url))

        # A member who is not an approver is told so, and nothing is decided.
        outsider = slack_click(approve, "U0NOBODY", response_url)
        assert (
            await http.post("/slack/interactions", content=outsider[0], headers=outsider[1])
        ).status_code == 200
        [first] = await eventually(answers)
        assert (
            "not a configured approver" in first["text"] and first["response_type"] == "ephemeral"
        )

        # The link to the gate's page (when [pages] public_url is set) opens in the browser;
        # Slack still reports the click, which is acknowledged and decides nothing.
        link = {"action_id": "open_page", "value": ""}
        body, headers = slack_click(link, slack_id("bob"), response_url)
        assert (
            await http.post("/slack/interactions", content=body, headers=headers)
        ).status_code == 200

        # Bob's click approves; a double click and the stale Reject button change nothing.
        for click in (approve, approve, reject):
            body, headers = slack_click(click, slack_id("bob"), response_url)
            assert (
                await http.post("/slack/interactions", content=body, headers=headers)
            ).status_code == 200
            await asyncio.sleep(1)  # Slack users click, not burst

        async def all_answers() -> list[dict[str, Any]] | None:
            got = await answers()
            return got if len(got) >= 4 else None

        replies = (await eventually(all_answers))[1:]
    assert replies[0]["replace_original"] is True and "approved by bob" in replies[0]["text"]
    assert all(r["replace_original"] is False and "not applied" in r["text"] for r in replies[1:])
    report = await service.report(workflow_id)
    assert [d.decided_by for d in report.decisions] == ["bob"]
