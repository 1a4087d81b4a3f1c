"""Helpers shared by the tests: identities, a config file, minted decisions, polling."""

from __future__ import annotations

import asyncio
import hashlib
import os
import textwrap
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from temporalio.client import WorkflowHandle

from activities.approval_auth import DecisionKind, DecisionRequest, mint_decision
from activities.config import load_config
from workflows.models import GateView
from workflows.pool_restart import PoolRestartWorkflow

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


def identities_toml() -> str:
    blocks = []
    for name, token in TOKENS.items():
        digest = hashlib.sha256(token.encode()).hexdigest()
        blocks.append(f'[identities.{name}]\ntoken_sha256 = "{digest}"\ngroups = {GROUPS[name]}\n')
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
