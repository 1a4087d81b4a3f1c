"""Encrypted history against a real dev server (with its UI pointed at our codec endpoint),
the real service in its own process, real Postgres and the demo app: a pool_restart dry run
is recorded once with the codec off and once with it on.

What the server stores is read with the `temporal` CLI and no codec. With the codec on it holds
no input, plan, diagnosis, summary or memo text; with it off the same searches find each, so
the test can fail. Workflow ids (`<runbook>-<target>`), search attributes, task queues and
type names stay plain by Temporal's design (the server routes and indexes by them): the
searches are for what the run carries, not for those.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.config import load_config
from infra.local_postgres import free_port
from infra.processes import server_process
from tests.support import (
    BIN,
    SERVER_STARTUP,
    TOKENS,
    DemoApp,
    OrdersDatabase,
    codec_converter,
    codec_keys,
    record_history,
    start_signed,
    write_config,
)
from workers.browser_sessions import issue_session
from workers.payload_codec import PayloadDecryptionError
from workers.settings import Settings, payload_codec
from workers.temporal_config import TemporalTarget
from workers.temporal_connect import connect_to
from workers.worker import WORKFLOW_RUNNER, WORKFLOWS, build_worker
from workflows.models import RunbookInput, RunReport, RunStatus
from workflows.names import SEARCH_ATTRIBUTES

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page, Response

CONFIG = """
[targets.orders-db]
kind = "postgres"
dsn = {{ env = "CODEC_DB_DSN" }}
health_url = "{app}/health"
restart = {{ url = "{app}/admin/restart", token = {{ env = "CODEC_APP_TOKEN" }} }}

# Every run diagnoses a pool with no stale sessions and plans an app restart (a dry run).
[runbooks.pool_restart]
usage_threshold = 0.0
idle_older_than_seconds = 3600
verify_consecutive = 1
verify_interval_seconds = 0.2
verify_deadline_seconds = 5

[codec_server]
decode_groups = ["engineering-leads"]
ui_origins = ["{ui}"]
"""

ENCRYPTED = "binary/encrypted"


@dataclass(frozen=True)
class Stack:
    server: WorkflowEnvironment
    address: str
    service: str
    ui: str
    config: Path


@dataclass(frozen=True)
class Run:
    workflow_id: str
    report: RunReport
    marker: str  # in the input's reason, the run's static summary and its memo

    def needles(self, app: DemoApp) -> list[str]:
        """Text the run carries that the server must not see in the clear: the input, the
        summary and memo, the diagnosis and the plan, the target's configured app."""
        diagnosis = next(s.summary for s in self.report.steps if s.kind == "diagnosis")
        planned = [s.summary for s in self.report.steps if s.kind == "plan"]
        return [self.marker, diagnosis, *planned, app.url.removeprefix("http://")]


@dataclass(frozen=True)
class Runs:
    plain: Run
    sealed: Run
    sealed_history: WorkflowHistory


@pytest.fixture(scope="module")
def stack_ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture(scope="module")
async def server(stack_ports: tuple[int, int]) -> AsyncIterator[WorkflowEnvironment]:
    service_port, ui_port = stack_ports
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=SERVER_STARTUP,
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=SEARCH_ATTRIBUTES,
        ui=True,
        ui_port=ui_port,
        dev_server_extra_args=["--ui-codec-endpoint", f"http://127.0.0.1:{service_port}/codec"],
    )
    async with env:
        yield env


@pytest.fixture(scope="module")
def stack(
    server: WorkflowEnvironment,
    stack_ports: tuple[int, int],
    orders_db: OrdersDatabase,
    demo_app: DemoApp,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The service in its own process, with the rotated ring: test-k2 encrypts, test-k1
    still reads."""
    service_port, ui_port = stack_ports
    ui = f"http://127.0.0.1:{ui_port}"
    os.environ["CODEC_DB_DSN"] = orders_db.admin_dsn
    os.environ["CODEC_APP_TOKEN"] = demo_app.admin_token
    config = write_config(tmp_path_factory.mktemp("codec"), CONFIG.format(app=demo_app.url, ui=ui))
    keys = {
        k: ref.model_dump(exclude_none=True) for k, ref in codec_keys("test-k1", "test-k2").items()
    }
    address = server.client.service_client.config.target_host
    env = {
        **os.environ,
        "REMEDIATE_CONFIG": str(config),
        "REMEDIATE_TEMPORAL_ADDRESS": address,
        "REMEDIATE_API_PORT": str(service_port),
        "REMEDIATE_CODEC_KEYS": json.dumps(keys),
        "REMEDIATE_CODEC_ENCRYPT_WITH": "test-k2",
    }
    with server_process([sys.executable, "-m", "workers.service"], service_port, env):
        yield Stack(server, address, f"http://127.0.0.1:{service_port}", ui, config)


async def client_for(stack: Stack, *key_ids: str, encrypt_with: str | None = None) -> Client:
    """A client as the engine's processes make one (`workers.settings.connect`), for the key
    ring REMEDIATE_CODEC_KEYS would name."""
    keys = codec_keys(*key_ids)
    encrypting = (encrypt_with or key_ids[0]) if key_ids else None
    codec = payload_codec(Settings(codec_keys=keys, codec_encrypt_with=encrypting))
    return await connect_to(TemporalTarget(stack.address, "default"), codec=codec)


async def dry_run(client: Client, label: str) -> Run:
    """A pool_restart dry run carried out by a worker with this client's converter."""
    marker = f"ticket-{label}-{uuid.uuid4().hex[:10]}"
    workflow_id = f"pool_restart-orders-db-{label}-{uuid.uuid4().hex[:6]}"
    queue = f"codec-{label}-{uuid.uuid4().hex[:6]}"
    params = RunbookInput(
        target="orders-db", requested_by="alice", reason=f"pool exhausted, {marker}", dry_run=True
    )
    async with build_worker(client, queue):
        handle = await start_signed(
            client,
            "PoolRestartWorkflow",
            params,
            id=workflow_id,
            task_queue=queue,
            result_type=RunReport,
            static_summary=f"dry run for {marker}",
            memo={"ticket": marker},
        )
        report = await handle.result()
    assert report.status == RunStatus.DRY_RUN, report.summary
    return Run(workflow_id, report, marker)


@pytest.fixture(scope="module")
async def runs(stack: Stack) -> Runs:
    plain = await dry_run(await client_for(stack), "plain")
    sealing = await client_for(stack, "test-k1")
    sealed = await dry_run(sealing, "sealed")
    history = await sealing.get_workflow_handle(sealed.workflow_id).fetch_history()
    return Runs(plain, sealed, history)


def stored(stack: Stack, workflow_id: str, *codec: str) -> str:
    """`temporal workflow show --output json`: the history as the server stores it (with
    `codec` options, as the CLI shows it through a codec server)."""
    command = [str(BIN / "temporal"), "workflow", "show", "-w", workflow_id, "-o", "json"]
    command += ["--address", stack.address, "--no-json-shorthand-payloads", *codec]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def payloads(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every payload in a history's JSON, with where it is."""
    if isinstance(node, dict):
        if set(node) >= {"metadata", "data"} and isinstance(node["data"], str):
            yield path, node
        for key, value in node.items():
            yield from payloads(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from payloads(value, f"{path}[{index}]")


# Plain by design: search attributes (the server indexes them) and the SDK's patch markers
# (`workflow.patched` ids, written by the SDK's core without the codec).
PLAIN_BY_DESIGN = ("searchAttributes", "patch-data")


def readable(history_json: str) -> tuple[str, set[str]]:
    """The history's text with every payload's data decoded from base64 beside it, and the
    encodings of the payloads that are not plain by design."""
    texts, encodings = [history_json], set()
    for path, payload in payloads(json.loads(history_json)):
        texts.append(base64.b64decode(payload["data"]).decode(errors="replace"))
        if not any(part in path for part in PLAIN_BY_DESIGN):
            encodings.add(base64.b64decode(payload["metadata"]["encoding"]).decode())
    return "\n".join(texts), encodings


async def test_the_server_stores_no_plan_target_or_diagnosis_text_with_the_codec_on(
    stack: Stack, runs: Runs, demo_app: DemoApp
) -> None:
    plain_text, plain_encodings = readable(stored(stack, runs.plain.workflow_id))
    sealed_text, sealed_encodings = readable(stored(stack, runs.sealed.workflow_id))
    plain_needles, sealed_needles = runs.plain.needles(demo_app), runs.sealed.needles(demo_app)
    # Off: each search finds its text (so the searches can fail)...
    assert all(plain_text.count(needle) > 0 for needle in plain_needles), plain_needles
    assert "json/plain" in plain_encodings
    # ...on: none does, and every payload is sealed but those plain by design.
    assert {needle: sealed_text.count(needle) for needle in sealed_needles} == dict.fromkeys(
        sealed_needles, 0
    )
    assert sealed_encodings == {ENCRYPTED}
    # The workflow id and the target's search attribute are plain, by design.
    assert runs.sealed.workflow_id in sealed_text


async def test_with_the_codec_everything_reads_back_and_replays(stack: Stack, runs: Runs) -> None:
    reader = await client_for(stack, "test-k1")
    handle = reader.get_workflow_handle(runs.sealed.workflow_id, result_type=RunReport)
    assert await handle.result() == runs.sealed.report
    described = await handle.describe()
    assert (await described.memo())["ticket"] == runs.sealed.marker
    assert runs.sealed.marker in (await described.static_summary() or "")
    # The replayer is configured like the worker: it opens the sealed history.
    replayer = Replayer(
        workflows=WORKFLOWS,
        data_converter=codec_converter("test-k1"),
        workflow_runner=WORKFLOW_RUNNER,
    )
    await replayer.replay_workflow(runs.sealed_history)
    if os.environ.get("RECORD_HISTORIES"):
        record_history("pool_restart_encrypted", runs.sealed_history)
    # The CLI reads it through the service's codec endpoint, as an authorized person.
    shown = stored(
        stack,
        runs.sealed.workflow_id,
        "--codec-endpoint",
        f"{stack.service}/codec",
        "--codec-auth",
        f"Bearer {TOKENS['bob']}",
    )
    assert runs.sealed.marker in readable(shown)[0]


async def test_after_key_rotation_payloads_sealed_under_the_old_key_still_read(
    stack: Stack, runs: Runs
) -> None:
    rotated = await client_for(stack, "test-k1", "test-k2", encrypt_with="test-k2")
    handle = rotated.get_workflow_handle(runs.sealed.workflow_id, result_type=RunReport)
    assert await handle.result() == runs.sealed.report
    # The service encrypts under k2 now and still opens what k1 sealed.
    sealed = json.loads(stored(stack, runs.sealed.workflow_id))
    started = next(p for path, p in payloads(sealed) if ".input" in path)
    async with httpx.AsyncClient(base_url=stack.service, headers=bearer("bob")) as http:
        decoded = await http.post("/codec/decode", json={"payloads": [started]})
        encoded = await http.post("/codec/encode", json=decoded.json())
    assert runs.sealed.marker in base64.b64decode(decoded.json()["payloads"][0]["data"]).decode()
    key_id = encoded.json()["payloads"][0]["metadata"]["encryption-key-id"]
    assert base64.b64decode(key_id) == b"test-k2"
    # Without k1 in the ring, the refusal says which key is missing.
    without_k1 = await client_for(stack, "test-k2")
    with pytest.raises(PayloadDecryptionError, match="'test-k1'"):
        await without_k1.get_workflow_handle(runs.sealed.workflow_id).result()


def test_the_cli_reads_a_sealed_run_with_the_keys_and_says_what_to_set_without(
    stack: Stack, runs: Runs
) -> None:
    keys = {k: r.model_dump(exclude_none=True) for k, r in codec_keys("test-k1").items()}
    with_keys = {
        "REMEDIATE_CODEC_KEYS": json.dumps(keys),
        "REMEDIATE_CODEC_ENCRYPT_WITH": "test-k1",
    }
    shown = remediate(stack, ["status", runs.sealed.workflow_id, "--json"], with_keys)
    assert shown.returncode == 0, shown.stderr
    assert runs.sealed.marker in shown.stdout
    refused = remediate(stack, ["status", runs.sealed.workflow_id, "--json"], {})
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: this payload is encrypted (codec key 'test-k1') and this process has no codec "
        "keys: set REMEDIATE_CODEC_KEYS and REMEDIATE_CODEC_ENCRYPT_WITH as the worker has them"
    ]


def remediate(
    stack: Stack, args: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """The `remediate` CLI in its own process, talking to this stack's Temporal."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("REMEDIATE_CODEC_")}
    process_env = base | {"TEMPORAL_ADDRESS": stack.address, **env}
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env=process_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def bearer(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


async def test_the_codec_endpoint_decodes_only_for_permitted_identities(
    stack: Stack, runs: Runs
) -> None:
    sealed = json.loads(stored(stack, runs.sealed.workflow_id))
    body = {"payloads": [p for _, p in payloads(sealed)][:3]}
    async with httpx.AsyncClient(base_url=stack.service) as http:
        anonymous = await http.post("/codec/decode", json=body)
        assert anonymous.status_code == 401 and "Bearer" in anonymous.json()["error"]
        for outsider in ("alice", "mallory"):  # configured, but not in engineering-leads
            refused = await http.post("/codec/decode", json=body, headers=bearer(outsider))
            assert refused.status_code == 403, refused.text
            assert "engineering-leads" in refused.json()["error"]
        bad = await http.post(
            "/codec/decode",
            json={"payloads": [{"metadata": {"encoding": "%%%"}, "data": "!"}]},
            headers=bearer("bob"),
        )
        assert bad.status_code == 400 and "Payloads as JSON" in bad.json()["error"]
        other = await http.post(
            "/codec/decode", json=body, headers={**bearer("bob"), "X-Namespace": "prod"}
        )
        assert other.status_code == 400 and "namespace" in other.json()["error"]
        # A session cookie stands for the identity; an altered one is refused.
        signed_in = await http.post("/session", headers=bearer("bob"))
        assert signed_in.status_code == 200 and signed_in.json()["identity"] == "bob"
        cookie = signed_in.cookies["remediate_session"]
        assert "httponly" in signed_in.headers["set-cookie"].lower()
        assert "samesite=strict" in signed_in.headers["set-cookie"].lower()
    for session, status in ((cookie, 200), (cookie[:-2] + "xx", 401)):
        async with httpx.AsyncClient(
            base_url=stack.service, cookies={"remediate_session": session}
        ) as browser:
            answer = await browser.post("/codec/decode", json=body)
            assert answer.status_code == status, answer.text
    assert "sign in" in answer.json()["error"]  # the altered cookie's refusal


async def test_the_codec_endpoint_counts_the_groups_a_provider_vouched_for(
    stack: Stack, runs: Runs
) -> None:
    """alice is not in engineering-leads in the config; signed in through the identity
    provider, which says she is, her session may decode (as her page decisions may approve);
    her session from a token sign-in may not."""
    sealed = json.loads(stored(stack, runs.sealed.workflow_id))
    body = {"payloads": [p for _, p in payloads(sealed)][:1]}
    config = load_config(stack.config)
    now = datetime.now(UTC)
    vouched = issue_session(
        config, "alice", now, signed_in_with="oidc", idp_groups=("engineering-leads",)
    )
    own = issue_session(config, "alice", now, signed_in_with="oidc", idp_groups=("sre",))
    for session, status in ((vouched, 200), (own, 403)):
        async with httpx.AsyncClient(
            base_url=stack.service, cookies={"remediate_session": session}
        ) as browser:
            answer = await browser.post("/codec/decode", json=body)
            assert answer.status_code == status, answer.text
    assert "alice may not read decoded payloads" in answer.json()["error"]


async def test_cors_lets_only_the_configured_ui_origin_read_with_credentials(
    stack: Stack,
) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace",
    }
    async with httpx.AsyncClient(base_url=stack.service) as http:
        allowed = await http.options("/codec/decode", headers={"Origin": stack.ui, **preflight})
        assert allowed.status_code == 204
        assert allowed.headers["access-control-allow-origin"] == stack.ui
        assert allowed.headers["access-control-allow-credentials"] == "true"
        assert "x-namespace" in allowed.headers["access-control-allow-headers"]
        foreign = await http.options(
            "/codec/decode", headers={"Origin": "http://evil.example", **preflight}
        )
        assert foreign.status_code == 403
        assert "access-control-allow-origin" not in foreign.headers
        # A refusal still carries CORS headers, so the UI can show why.
        refused = await http.post(
            "/codec/decode", json={"payloads": []}, headers={"Origin": stack.ui}
        )
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == stack.ui


CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (make debian-packages installs it)
# As root in a container Chromium's sandbox cannot start; nothing here needs the network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium (make test installs it)")
async def test_the_ui_shows_decoded_input_through_the_codec_endpoint(
    stack: Stack, runs: Runs
) -> None:
    """The Temporal UI (the dev server's, its codec endpoint our service) in headless
    Chromium: signed in, the page shows the run's input decoded; without a session it
    cannot."""
    from playwright.async_api import async_playwright

    page_url = f"{stack.ui}/namespaces/default/workflows/{runs.sealed.workflow_id}"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            signed_in = await ui_page(browser, stack, sign_in_as="bob")
            await signed_in.goto(page_url)
            await signed_in.get_by_text(runs.sealed.marker).first.wait_for(timeout=30_000)

            anonymous = await ui_page(browser, stack, sign_in_as=None)
            refused = asyncio.get_running_loop().create_future()
            anonymous.on("response", lambda r: _codec_answer(r, refused))
            await anonymous.goto(page_url)
            assert await asyncio.wait_for(refused, 30) == 401
            await anonymous.get_by_text(runs.sealed.workflow_id).first.wait_for(timeout=30_000)
            assert await anonymous.get_by_text(runs.sealed.marker).count() == 0
        finally:
            await browser.close()


# What the UI's codec settings (the "Codec Server" dialog) store in the browser when a person
# enters the endpoint, ticks "Use my browser setting and ignore Cluster-level setting" and
# "Include cross-origin credentials". The UI reads that last toggle only with the override.
UI_CODEC_SETTINGS = """
window.localStorage.setItem('endpoint', JSON.stringify('{endpoint}'));
window.localStorage.setItem('overrideRemoteCodecConfiguration', 'true');
window.localStorage.setItem('includeCredentials', 'true');
"""


async def ui_page(browser: Browser, stack: Stack, sign_in_as: str | None) -> Page:
    """A fresh browser profile whose UI includes credentials in its codec calls, signed in to
    the service (an HttpOnly session cookie) or not."""
    context = await browser.new_context()
    await context.add_init_script(UI_CODEC_SETTINGS.format(endpoint=f"{stack.service}/codec"))
    if sign_in_as is not None:
        signed_in = await context.request.post(
            f"{stack.service}/session", headers=bearer(sign_in_as)
        )
        assert signed_in.ok, await signed_in.text()
    return await context.new_page()


def _codec_answer(response: Response, first: asyncio.Future[int]) -> None:
    if "/codec/decode" in response.url and response.request.method == "POST" and not first.done():
        first.set_result(response.status)
