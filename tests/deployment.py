"""The engine deployed as processes, the way the image runs them (`python -m workers.worker`,
`python -m workers.service`), against a test's dev server, with a test app of many targets
(tests/flag_app.py) whose `read_only` runs need two gates each: shared by the tests of
horizontal scale and of a secured Temporal connection."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from temporalio.client import Client

from infra.local_postgres import free_port
from infra.processes import server_process
from tests import payloads
from tests.support import TOKENS, write_config

TARGETS = [f"scale-{i}" for i in range(6)]
AM_TOKEN = "am-scale-" + uuid.uuid4().hex
TARGET = """
[targets.{name}]
kind = "http"
health_url = "{app}/t/{name}/health"

[targets.{name}.app_flag]
url = "{app}/t/{name}/maintenance"
write_probe_url = "{app}/t/{name}/orders"
read_probe_url = "{app}/t/{name}/orders"

[[routes]]
name = "ro-{name}"
runbook = "read_only"
target = "{name}"
match = {{ alertname = "ScaleReadOnly", service = "{name}" }}
"""
COMMON = """
[intake]
alertmanager_tokens = [{{ env = "SCALE_AM_TOKEN" }}]

[runbooks.read_only]
hold_ttl = 1
remind_every = 600
verify_consecutive = 2
verify_interval_seconds = {interval}
verify_deadline_seconds = 60
"""
ROOT = str(Path(__file__).resolve().parent.parent)


@dataclass
class Deployment:
    client: Client
    env: dict[str, str]
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # identity ->
    services: list[str] = field(default_factory=list)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def start_worker(self, drain: float = 30) -> str:
        """A worker process as the image runs it; its Temporal identity is `<pid>@<host>`."""
        env = self.env | {"REMEDIATE_WORKER_DRAIN_SECONDS": str(drain)}
        process = subprocess.Popen(
            [sys.executable, "-m", "workers.worker"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        identity = f"{process.pid}@{os.uname().nodename}"
        self.workers[identity] = process
        return identity

    def start_service(self) -> str:
        port = free_port()
        env = self.env | {"REMEDIATE_API_PORT": str(port)}
        command = [sys.executable, "-m", "workers.service"]
        self.stack.enter_context(server_process(command, port, env, quiet=True))
        url = f"http://127.0.0.1:{port}"
        self.services.append(url)
        return url

    def stop(self) -> None:
        for process in self.workers.values():
            if process.poll() is None:
                process.kill()
            process.wait()
        self.stack.close()

    @property
    def queue(self) -> str:
        return self.env["REMEDIATE_TASK_QUEUE"]


def write_deployment_config(directory: Path, app_url: str, verify_interval: float = 1.0) -> Path:
    body = "".join(TARGET.format(name=name, app=app_url) for name in TARGETS)
    return write_config(directory, body + COMMON.format(interval=verify_interval))


def process_env(config: Path, temporal: dict[str, str]) -> dict[str, str]:
    """The processes' environment: the engine's own settings, and `temporal` (TEMPORAL_*
    variables) as the only Temporal configuration."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TEMPORAL_") and name != "REMEDIATE_TEMPORAL_ADDRESS"
    }
    return env | {
        "PYTHONPATH": ROOT,
        "REMEDIATE_CONFIG": str(config),
        "REMEDIATE_TASK_QUEUE": f"deployed-{uuid.uuid4().hex[:6]}",
        "REMEDIATE_LOG_FORMAT": "text",
        "SCALE_AM_TOKEN": AM_TOKEN,
        # No profile file but the one `temporal` names (the default one is the user's).
        "TEMPORAL_CONFIG_FILE": str(config.with_suffix(".temporal.toml")),
        **temporal,
    }


async def send_alert(service: str, name: str) -> str:
    body = payloads.encode(
        payloads.alertmanager(
            "firing", {"alertname": "ScaleReadOnly", "service": name}, f"fp-{name}"
        )
    )
    async with httpx.AsyncClient(base_url=service, timeout=60) as http:
        response = await http.post(
            "/alerts/alertmanager",
            content=body,
            headers={**payloads.bearer(AM_TOKEN), "Content-Type": "application/json"},
        )
    assert response.status_code == 202, response.text
    outcome: str = response.json()["results"][0]["outcome"]
    return outcome


async def approve_everything(services: list[str], stop: asyncio.Event) -> int:
    """A lead at work: lists the open gates on one service, approves each on the other."""
    bob, approved, turn = payloads.bearer(TOKENS["bob"]), 0, 0
    async with httpx.AsyncClient(timeout=30) as http:
        while not stop.is_set():
            lister, decider = services[turn % 2], services[(turn + 1) % 2]
            turn += 1
            listed = await http.get(f"{lister}/approvals", headers=bob)
            if listed.status_code == 200:
                for gate in listed.json():
                    answer = await http.post(
                        f"{decider}/approvals/{gate['workflow_id']}/approve",
                        json={"plan_id": gate["plan"]["plan_id"], "reason": "scale test"},
                        headers=bob,
                    )
                    approved += answer.status_code == 200
            await asyncio.sleep(0.3)
    return approved
