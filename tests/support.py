"""Helpers shared by the tests: identities, a config file, minted decisions, polling."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import sys
import textwrap
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, TypeVar

import psycopg
from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.converter import DataConverter

from activities import decision_tokens
from activities.approval_auth import DecisionKind, DecisionRequest
from activities.refs import SecretRef
from infra.local_postgres import free_port
from workers.codec_keys import codec_for
from workers.payload_codec import data_converter
from workflows.models import GateView, RunbookInput
from workflows.names import SEARCH_ATTRIBUTES
from workflows.pool_restart import PoolRestartWorkflow

# The virtualenv's bin: uvicorn, temporal and the test server come from packages there.
BIN = Path(sys.executable).parent
# How long a Temporal dev or test server may take to start: under make test's load the
# SDK's default (5 s) was not always enough.
SERVER_STARTUP = timedelta(seconds=60)
SIGNING_KEY_ENV = "REMEDIATE_TEST_SIGNING_KEY"
VERIFY_KEY_ENV = "REMEDIATE_TEST_VERIFY_KEY"
TOKENS = {
    "alice": "tok-alice-requester",
    "bob": "tok-bob-lead",
    "carol": "tok-carol-lead",
    "mallory": "tok-mallory-outsider",
}
GROUPS = {
    "alice": ["sre"],
    "bob": ["engineering-leads", "sre"],
    "carol": ["engineering-leads"],
    "mallory": [],
}

T = TypeVar("T")


def slack_id(name: str) -> str:
    return f"U0{name.upper()}"


def identities_toml() -> str:
    blocks = []
    for name, token in TOKENS.items():
        digest = hashlib.sha256(token.encode()).hexdigest()
        blocks.append(
            f'[identities.{name}]\ntoken_sha256 = "{digest}"\ngroups = {GROUPS[name]}\n'
            f'slack_user_id = "{slack_id(name)}"\n'
        )
    return "\n".join(blocks)


def session_keys() -> tuple[str, str]:
    """The approval service's key pair for this test session: (private, public), also in the
    environment the config refers to."""
    if SIGNING_KEY_ENV not in os.environ:
        private = decision_tokens.new_private_key_text()
        os.environ[SIGNING_KEY_ENV] = private
        os.environ[VERIFY_KEY_ENV] = decision_tokens.public_text(
            decision_tokens.private_key(private)
        )
    return os.environ[SIGNING_KEY_ENV], os.environ[VERIFY_KEY_ENV]


def approvals_toml(extra: str = "") -> str:
    """The `[approvals]` section: the session's keys by reference, and `extra` settings (which
    may list other verify keys)."""
    session_keys()
    verify = "" if "verify_keys" in extra else f'verify_keys = [{{ env = "{VERIFY_KEY_ENV}" }}]\n'
    return f'\n[approvals]\nsigning_key = {{ env = "{SIGNING_KEY_ENV}" }}\n{verify}{extra}\n'


def write_config(directory: Path, body: str, approvals: str = "") -> Path:
    """Write a config with the test identities and point REMEDIATE_CONFIG at it."""
    path = directory / f"config-{uuid.uuid4().hex[:8]}.toml"
    path.write_text(textwrap.dedent(body) + approvals_toml(approvals) + identities_toml())
    os.environ["REMEDIATE_CONFIG"] = str(path)
    return path


def mint(
    who: str,
    shown: GateView | None,
    kind: DecisionKind,
    reason: str = "",
    *,
    key: str | None = None,
    now: datetime | None = None,
    ttl: timedelta = timedelta(minutes=15),
    **binding: Any,
) -> DecisionRequest:
    """A decision as the approval service signs it for `who` on the gate it was `shown`;
    `binding` overrides a claim (workflow_id, run_id, gate, plan_id; all four without `shown`,
    for a decision sent
    before its gate opens) and `key` signs with another private key, as an attacker would."""
    bound = (
        {"workflow_id": shown.workflow_id, "run_id": shown.run_id, "gate": shown.gate}
        | {"plan_id": shown.plan.plan_id}
        if shown is not None
        else {}
    )
    claims: dict[str, Any] = {**bound, **binding}
    token = decision_tokens.issue(
        decision_tokens.private_key(key or session_keys()[0]),
        audience="gate",
        kind=kind,
        subject=who,
        groups=GROUPS.get(who, []),
        reason=reason,
        # The gate's clock: on the time-skipping test server it runs ahead of the wall clock.
        now=now or (shown.opened_at if shown is not None else datetime.now(UTC)),
        ttl=ttl,
        **claims,
    )
    return DecisionRequest(token=token, approver=who, plan_id=claims["plan_id"])


async def eventually(
    probe: Callable[[], Awaitable[T | None]], seconds: float = 30.0, every: float = 0.2
) -> T:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {seconds}s")
        await asyncio.sleep(every)


async def wait_for_gate(handle: WorkflowHandle[Any, Any], seconds: float = 30) -> GateView:
    async def probe() -> GateView | None:
        return await handle.query(PoolRestartWorkflow.pending_gate)

    return await eventually(probe, seconds)


@dataclass(frozen=True)
class OrdersDatabase:
    admin_dsn: str
    app_dsn: str
    superuser_password: str


@dataclass(frozen=True)
class DemoApp:
    url: str
    admin_token: str


class Sessions:
    """Client sessions of the `app` role that the test opens, and what survives."""

    def __init__(self, dsn: str, admin_dsn: str) -> None:
        self.dsn, self.admin_dsn = dsn, admin_dsn
        self.connections: list[psycopg.Connection[tuple[object, ...]]] = []

    def open_idle(self, count: int) -> list[int]:
        opened = [psycopg.connect(self.dsn, application_name="orders-api") for _ in range(count)]
        self.connections += opened
        return [c.info.backend_pid for c in opened]

    @contextmanager
    def active(self) -> Iterator[int]:
        """A session busy running a query for the whole test."""
        conn = psycopg.connect(self.dsn, application_name="orders-worker")
        pid = conn.info.backend_pid

        def busy() -> None:
            with suppress(psycopg.Error):  # ended by pg_terminate_backend at the end
                conn.execute("SELECT pg_sleep(120)")

        thread = threading.Thread(target=busy, daemon=True)
        thread.start()
        try:
            yield pid
        finally:
            with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            thread.join(timeout=10)
            conn.close()

    def alive(self, pids: list[int]) -> set[int]:
        with psycopg.connect(self.admin_dsn) as admin:
            rows = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
            ).fetchall()
        return {int(r[0]) for r in rows}

    def leave(self, pids: list[int]) -> None:
        """These sessions end on their own: their client closes them."""
        for conn in self.connections:
            if not conn.closed and conn.info.backend_pid in pids:
                conn.close()

    def close(self) -> None:
        for conn in self.connections:
            conn.close()


class Receiver(ThreadingHTTPServer):
    received: list[dict[str, Any]]
    authorizations: list[str]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.received.append(json.loads(body))
        self.server.authorizations.append(self.headers.get("Authorization", ""))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    """A real HTTP server that records the notifications the engine sends."""
    server = Receiver(("127.0.0.1", free_port()), _Handler)
    server.received, server.authorizations = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()


def signed_start(
    params: RunbookInput, workflow_id: str, now: datetime | None = None
) -> RunbookInput:
    """The input as the approval service starts a run: its requester signed and bound to it."""
    token = decision_tokens.issue(
        decision_tokens.private_key(session_keys()[0]),
        audience="start",
        kind="start",
        subject=params.requested_by,
        groups=GROUPS.get(params.requested_by, []),
        workflow_id=workflow_id,
        input_hash=params.input_hash(),
        now=now or datetime.now(UTC),
        ttl=timedelta(minutes=2),
    )
    return params.model_copy(update={"requester_token": token})


async def start_signed(
    client: Client,
    workflow: Any,
    params: RunbookInput,
    *,
    id: str,
    now: datetime | None = None,
    **options: Any,
) -> WorkflowHandle[Any, Any]:
    """`client.start_workflow` as the approval service does it (see `signed_start`); `now` is
    the server's clock where it is not the wall clock (the time-skipping test server)."""
    return await client.start_workflow(workflow, signed_start(params, id, now), id=id, **options)


def switch(
    who: str,
    kind: Literal["pause", "resume"],
    workflow_id: str,
    reason: str = "",
    now: datetime | None = None,
    key: str | None = None,
) -> Any:
    """A pause or resume of the kill switch as the approval service signs it for `who` (at
    the server's `now` where that is not the wall clock), with its key or `key`."""
    from activities.safety import PauseRequest

    token = decision_tokens.issue(
        decision_tokens.private_key(key or session_keys()[0]),
        audience="safety",
        kind=kind,
        subject=who,
        groups=GROUPS.get(who, []),
        workflow_id=workflow_id,
        reason=reason,
        now=now or datetime.now(UTC),
        ttl=timedelta(minutes=5),
    )
    return PauseRequest(token=token, by=who, reason=reason)


HISTORIES = Path(__file__).parent / "histories"
WORKFLOW_IDS = HISTORIES / "workflow_ids.json"


def record_history(name: str, history: WorkflowHistory) -> None:
    """Keep `history` as tests/histories/<name>.json for tests/test_replay.py, with the
    workflow id it ran under (the id is part of what a signed decision is bound to, and the
    history's events do not carry it)."""
    HISTORIES.mkdir(exist_ok=True)
    (HISTORIES / f"{name}.json").write_text(history.to_json())
    ids = json.loads(WORKFLOW_IDS.read_text()) if WORKFLOW_IDS.exists() else {}
    WORKFLOW_IDS.write_text(json.dumps({**ids, name: history.workflow_id}, indent=2) + "\n")


# The payload codec's test keys (workers/payload_codec.py), by reference as in production.
# `test-k1` is fixed, not random: tests/histories/pool_restart_encrypted.json was sealed
# under it and tests/test_replay.py opens it. A test key, never a real one.
CODEC_KEY_ENVS = {"test-k1": "REMEDIATE_TEST_CODEC_K1", "test-k2": "REMEDIATE_TEST_CODEC_K2"}
CODEC_TEST_K1 = "3q2+7wABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGho="


def codec_keys(*key_ids: str) -> dict[str, SecretRef]:
    """The test codec keys `key_ids` as references (REMEDIATE_CODEC_KEYS), their values put
    in the environment: test-k1 fixed, test-k2 random per session."""
    os.environ.setdefault(CODEC_KEY_ENVS["test-k1"], CODEC_TEST_K1)
    os.environ.setdefault(CODEC_KEY_ENVS["test-k2"], base64.b64encode(os.urandom(32)).decode())
    return {key_id: SecretRef(env=CODEC_KEY_ENVS[key_id]) for key_id in key_ids}


def codec_converter(*key_ids: str, encrypt_with: str | None = None) -> DataConverter:
    """The data converter a process configured with these test keys uses (no keys: plain)."""
    keys = codec_keys(*key_ids)
    return data_converter(codec_for(keys, (encrypt_with or key_ids[0]) if keys else None))


async def fresh_namespace(client: Client, prefix: str = "cli") -> str:
    """A namespace of the test's own, with the engine's search attributes: listings in it
    see only the test's runs."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    await client.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=name, workflow_execution_retention_period=Duration(seconds=86400)
        )
    )
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=name,
            search_attributes={
                key.name: IndexedValueType.ValueType(key.indexed_value_type)
                for key in SEARCH_ATTRIBUTES
            },
        )
    )
    return name
