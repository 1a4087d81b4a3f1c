"""The approval pages in headless Chromium, against the service in its own process, a real dev
server, a worker in this process, a real HTTP app (tests/flag_app.py) whose read_only runs
change it for real, and a real OpenID provider (tests/oidc_provider.py) on another site.

A lead opens the gate from its link, signs in with the provider, reads the plan and approves;
the app goes read-only. A page left open on that gate cannot approve the next one (409); a
person whose provider group the config does not map sees the gate and is refused by it; a
forged form is refused; an expired session is sent to sign in again; the lead approves the
exit and the run's page shows it remediated, with its record.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.config import load_config
from activities.links import gate_page_url, run_page_url
from infra.local_postgres import free_port
from infra.processes import server_process
from tests.flag_app import FlagApp, flag_app
from tests.oidc_provider import CLIENT_SECRET_ENV, Provider, oidc_toml, running_provider, sub_of
from tests.support import BIN, SERVER_STARTUP, TOKENS, eventually, write_config
from workers.browser_sessions import COOKIE, issue_session
from workers.worker import build_worker
from workflows.models import GateView
from workflows.names import SEARCH_ATTRIBUTES

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page, ViewportSize

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (make debian-packages installs it)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
PHONE: ViewportSize = {"width": 390, "height": 844}
TARGET = "pages-app"
WORKFLOW_ID = f"read_only-{TARGET}"

CONFIG = """
[pages]
public_url = "{service}"

[targets.{target}]
kind = "http"
health_url = "{app}/t/{target}/health"

[targets.{target}.app_flag]
url = "{app}/t/{target}/maintenance"
write_probe_url = "{app}/t/{target}/orders"
read_probe_url = "{app}/t/{target}/orders"

[runbooks.read_only]
hold_ttl = 1
remind_every = 600
verify_consecutive = 1
verify_interval_seconds = 0.2
verify_deadline_seconds = 20
"""

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium (make test installs it)"),
    pytest.mark.filterwarnings("ignore:get_jwt_config:DeprecationWarning"),
]


@dataclass(frozen=True)
class Stack:
    service: str
    client: Client
    app: FlagApp
    provider: Provider
    queue: str


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with running_provider() as running:
        yield running


@pytest.fixture(scope="module")
def app() -> Iterator[FlagApp]:
    with flag_app() as running:
        yield running


@pytest.fixture(scope="module")
async def stack(
    provider: Provider, app: FlagApp, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    port = free_port()
    service = f"http://127.0.0.1:{port}"
    os.environ[CLIENT_SECRET_ENV] = "client-secret-" + uuid.uuid4().hex
    body = CONFIG.format(service=service, target=TARGET, app=app.url) + oidc_toml(provider.issuer)
    config = write_config(tmp_path_factory.mktemp("pages"), body)
    queue = f"pages-{uuid.uuid4().hex[:6]}"
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=SERVER_STARTUP,
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=SEARCH_ATTRIBUTES,
    )
    async with env:
        address = env.client.service_client.config.target_host
        process_env = {
            **os.environ,
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
            "REMEDIATE_CONFIG": str(config),
            "REMEDIATE_TEMPORAL_ADDRESS": address,
            "REMEDIATE_API_PORT": str(port),
            "REMEDIATE_TASK_QUEUE": queue,
            "REMEDIATE_LOG_FORMAT": "text",
        }
        command = [sys.executable, "-m", "workers.service"]
        with server_process(command, port, process_env, quiet=True):
            async with build_worker(env.client, queue):
                yield Stack(service, env.client, app, provider, queue)


async def open_gate(stack: Stack, wanted: str) -> GateView:
    """The gate open on the run once its plan's action is `wanted` (the API's view)."""
    headers = {"Authorization": f"Bearer {TOKENS['bob']}"}
    async with httpx.AsyncClient(base_url=stack.service, headers=headers) as http:

        async def probe() -> GateView | None:
            answer = await http.get(f"/approvals/{WORKFLOW_ID}")
            if answer.status_code != 200 or answer.json() is None:
                return None
            gate = GateView.model_validate(answer.json())
            return gate if gate.plan.action == wanted else None

        return await eventually(probe, 60)


async def new_browser_page(browser: Browser) -> tuple[BrowserContext, Page]:
    """A fresh profile on a phone-sized screen; nothing but the local servers is reached (the
    provider's form links a stylesheet on a CDN)."""
    context = await browser.new_context(viewport=PHONE, device_scale_factor=2)

    async def local_only(route: object) -> None:
        from playwright.async_api import Route

        assert isinstance(route, Route)
        host = route.request.url.split("/")[2].split(":")[0]
        if host in ("127.0.0.1", "localhost"):
            await route.continue_()
        else:
            await route.abort()

    await context.route("**/*", local_only)
    return context, await context.new_page()


async def sign_in_with_provider(page: Page, email: str) -> None:
    """On the sign-in page: off to the provider, pick the person, back to the page asked for."""
    await page.get_by_role("link", name="Sign in with Example SSO").click()
    await page.get_by_role("button", name=sub_of(email)).click()
    await page.wait_for_url("**/ui/**")


async def test_a_lead_approves_from_the_link_and_the_run_remediates(
    stack: Stack, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    config = load_config()
    async with httpx.AsyncClient(base_url=stack.service) as http:
        started = await http.post(
            "/runs",
            json={"runbook": "read_only", "target": TARGET, "reason": "orders corrupting"},
            headers={"Authorization": f"Bearer {TOKENS['alice']}"},
        )
        assert started.status_code == 200, started.text
    enter = await open_gate(stack, "enter_read_only")
    link = gate_page_url(config, WORKFLOW_ID)
    assert link == f"{stack.service}/ui/gates/{WORKFLOW_ID}"

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            lead_context, lead = await new_browser_page(browser)
            # -- the lead opens the link, signs in, reads, approves ----------------------------
            opened = time.monotonic()
            await lead.goto(link)
            assert "/ui/sign-in" in lead.url
            await sign_in_with_provider(lead, "bob@example.com")
            assert lead.url == link
            await lead.get_by_role("heading", name=f"enter_read_only on {TARGET}").wait_for()
            shown = await lead.locator("body").inner_text()
            for expected in ("What will be done", "can be undone", "Blast radius and policy",
                             "Evidence from the diagnosis", "Who started it", "alice",
                             "orders corrupting", "Timeline so far", "0 of 1 approvals",
                             "Decide by", enter.plan.plan_id):  # fmt: skip
                assert expected in shown, expected
            screenshot = tmp_path / "gate-page-phone.png"
            await lead.screenshot(path=str(screenshot), full_page=True)
            # A second tab left open on this gate (used below, once the gate has moved on).
            stale = await lead_context.new_page()
            await stale.goto(link)
            await lead.get_by_label("Reason").fill("writes are corrupting orders")
            await lead.get_by_role("button", name="Approve plan").click()
            await lead.get_by_role("heading", name="Approved").wait_for()
            recorded = time.monotonic() - opened
            print(f"\nphone-sized screenshot of the gate page: {screenshot}")
            print(f"link opened -> approval recorded: {recorded:.2f} s (sign-in included)")

            await eventually(lambda: _flag(stack.app, True), 30)
            exit_gate = await open_gate(stack, "exit_read_only")

            # -- a page that showed the last gate cannot approve this one --------------------
            await stale.get_by_role("button", name="Approve plan").click()
            await stale.get_by_role("heading", name="The plan changed").wait_for()
            assert "no longer the open plan" in await stale.locator("body").inner_text()
            assert await stale.evaluate("document.readyState") == "complete"

            # -- a forged form (no CSRF token), with the lead's cookies ----------------------
            forged = await lead_context.request.post(
                f"{stack.service}/ui/gates/{WORKFLOW_ID}/decide",
                form={"kind": "approve", "plan_id": exit_gate.plan.plan_id,
                      "run_id": exit_gate.run_id, "gate": str(exit_gate.gate)},
                max_redirects=0,
            )  # fmt: skip
            assert forged.status == 403, await forged.text()
            assert "CSRF" in await forged.text()
            foreign = await lead_context.request.post(
                f"{stack.service}/ui/gates/{WORKFLOW_ID}/decide",
                form={"kind": "approve", "plan_id": exit_gate.plan.plan_id},
                headers={"Origin": "https://evil.example"},
                max_redirects=0,
            )
            assert foreign.status == 403 and "not from the approval pages" in await foreign.text()

            # -- someone whose provider group maps to nothing sees the gate, is refused ------
            _, outsider = await new_browser_page(browser)
            await outsider.goto(link)
            await sign_in_with_provider(outsider, "mallory@example.com")
            await outsider.get_by_text("You (mallory) are not in engineering-leads").wait_for()
            await outsider.get_by_role("button", name="Approve plan").click()
            await outsider.get_by_role("heading", name="Not decided").wait_for()
            refusal = await outsider.get_by_role("alert").inner_text()
            assert "mallory is not in the required group engineering-leads" in refusal

            # -- an expired session goes back to sign in, then to the gate -------------------
            expired = issue_session(
                config, "bob", datetime.now(UTC) - timedelta(hours=9), ttl=timedelta(hours=8)
            )
            await lead_context.add_cookies(
                [{"name": COOKIE, "value": expired, "url": stack.service}]
            )
            await lead.goto(link)
            await lead.get_by_text("Your session has expired: sign in again.").wait_for()
            await sign_in_with_provider(lead, "bob@example.com")
            assert lead.url == link
            await lead.get_by_role("heading", name=f"exit_read_only on {TARGET}").wait_for()
            await lead.get_by_role("button", name="Approve plan").click()
            await lead.get_by_role("heading", name="Approved").wait_for()

            # -- the run's page: remediated, with its timeline and record --------------------
            await eventually(lambda: _flag(stack.app, False), 30)
            run_link = run_page_url(config, WORKFLOW_ID)
            assert run_link is not None

            async def remediated() -> bool:
                await lead.goto(run_link)
                return await lead.locator("#status").inner_text() == "Remediated"

            await eventually(remediated, 30, every=0.5)
            record = await lead.locator("#incident-record").inner_text()
            assert "accepts writes again" in record
            # The incident record in the runbooks' template's order, with who decided.
            for section in ("Summary", "Impact", "Root cause, as diagnosed", "Resolution"):
                assert section in record, section
            assert "Follow-ups for a person" in record and "bob" in record
            # The team's numbers count this run.
            await lead.goto(run_link.replace(f"/ui/runs/{WORKFLOW_ID}", "/ui/stats?since=1h"))
            numbers = await lead.locator("main, body").first.inner_text()
            assert "read_only" in numbers and "Remediated 1" in numbers, numbers
            stats_url = run_link.replace(f"/ui/runs/{WORKFLOW_ID}", "/ui/stats?since=whenever")
            assert (await lead_context.request.get(stats_url)).status == 422
            await lead.goto(run_link)
            page_text = await lead.locator("body").inner_text()
            assert "approved by bob" in page_text and "mallory" in page_text
            await lead.screenshot(path=str(tmp_path / "run-page-phone.png"), full_page=True)
            as_json = await lead_context.request.get(f"{run_link}/record.json")
            assert json.loads(await as_json.text())["status"] == "Remediated"
        finally:
            await browser.close()
    assert stack.app.changes[(TARGET, True)] == 1 and stack.app.changes[(TARGET, False)] == 1


async def _flag(app: FlagApp, read_only: bool) -> bool:
    with app.lock:
        return app.read_only.get(TARGET, False) == read_only
