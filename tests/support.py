"""Helpers shared by the tests: identities, a config file, minted decisions, polling."""

from __future__ import annotations

import asyncio
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from temporalio.client import WorkflowHandle

from activities.approval_auth import DecisionKind, DecisionRequest, mint_decision
from activities.config import load_config
from infra.local_postgres import free_port
from workflows.models import GateView
from workflows.pool_restart import PoolRestartWorkflow

# The virtualenv's bin: uvicorn, temporal and the test server come from packages there.
BIN = Path(sys.executable).parent
SIGNING_KEY_ENV = "REMEDIATE_TEST_SIGNING_KEY"
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


def write_config(directory: Path, body: str) -> Path:
    """Write a config with the test identities and point REMEDIATE_CONFIG at it."""
    os.environ.setdefault(SIGNING_KEY_ENV, "signing-" + uuid.uuid4().hex)
    path = directory / f"config-{uuid.uuid4().hex[:8]}.toml"
    path.write_text(
        textwrap.dedent(body)
        + f'\n[approvals]\nsigning_key = {{ env = "{SIGNING_KEY_ENV}" }}\n\n'
        + identities_toml()
    )
    os.environ["REMEDIATE_CONFIG"] = str(path)
    return path


def mint(
    who: str, workflow_id: str, kind: DecisionKind, plan_id: str, reason: str = ""
) -> DecisionRequest:
    return mint_decision(load_config(), TOKENS[who], workflow_id, kind, plan_id, reason)


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
