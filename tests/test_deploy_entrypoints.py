"""The commands the image runs, run here as the manifests run them: the command each
Kubernetes Deployment and Compose service names, with the image's ENV and the environment
the manifest sets (secrets filled in as their Secrets or env files would), changed only
where this machine differs from a container (Temporal is the test dev server, ports are
free ones, the config's mount path is a copy of it). The service must answer its probes and
the Compose healthcheck; the worker must poll Temporal, answer its probe, and stop cleanly on
SIGTERM."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.testing import WorkflowEnvironment

from infra.local_postgres import free_port
from tests.deploy_files import (
    PRODUCTION_CONFIG,
    ROOT,
    compose_config,
    compose_project,
    dockerfile_instructions,
    image_env,
    k8s_env,
    k8s_resource,
    only_container,
)
from tests.support import BIN, eventually, session_keys

SOURCES = ("k8s", "compose")
STOP_SECONDS = 20


@dataclass(frozen=True)
class Launch:
    """A process as a manifest starts it: its command, its environment, how it is probed."""

    command: list[str]
    env: dict[str, str]
    probes: list[str]  # paths on the port the process serves
    healthcheck: list[str] | None  # Compose's healthcheck command, when it has one


def secret_values() -> dict[str, str]:
    """What the operator's Secrets / env files hold for the production config's references."""
    private, public = session_keys()
    return {
        "REMEDIATE_APPROVAL_SIGNING_KEY": private,
        "REMEDIATE_APPROVAL_VERIFY_KEY": public,
        "ORDERS_DB_DSN": "postgresql://engine@db.invalid/orders",
        "ALERTMANAGER_TOKEN": "am-" + uuid.uuid4().hex,
    }


def k8s_launch(name: str) -> Launch:
    container = only_container(k8s_resource("Deployment", f"remediate-{name}"))
    values, _, whole_secrets = k8s_env(container)
    env = {**image_env(dockerfile_instructions()), **values}
    secrets = secret_values()
    if whole_secrets == ["remediate-worker"]:
        secrets.pop("REMEDIATE_APPROVAL_SIGNING_KEY")  # the worker's Secret never holds it
    probes = [container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")]
    return Launch(container["command"], {**env, **secrets}, probes, None)


def compose_launch(name: str, tmp_path: Path) -> Launch:
    directory = compose_project(tmp_path / "compose")
    result = compose_config(directory, {"TEMPORAL_DB_PASSWORD": "unused-here"})
    assert result.returncode == 0, result.stderr
    service: dict[str, Any] = yaml.safe_load(result.stdout)["services"][name]
    env = {**image_env(dockerfile_instructions()), **service["environment"]}
    # The env files' empty values, filled in as the README asks.
    env |= {k: v for k, v in secret_values().items() if env.get(k) == ""}
    assert all(value != "" for value in env.values()), f"unfilled: {env}"
    healthcheck = [a for a in service["healthcheck"]["test"] if a != "CMD"]
    probe = re.search(r"http://127\.0\.0\.1:\d+(/\w+)", healthcheck[-1])
    assert probe, healthcheck
    return Launch(service["command"], env, [probe[1]], healthcheck)


def localize(launch: Launch, dev_env: WorkflowEnvironment, tmp_path: Path) -> tuple[Launch, int]:
    """The launch with what differs on this machine replaced; each replaced variable must be
    one the image or the manifest sets. Returns it and the port its probes are on."""
    env = dict(launch.env)
    config = tmp_path / "config.toml"
    shutil.copy(PRODUCTION_CONFIG, config)
    port = free_port()
    replaced = {
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": dev_env.client.namespace,
        "REMEDIATE_CONFIG": str(config),
        "PATH": env["PATH"].replace("/opt/venv/bin", str(BIN)).replace("$PATH", "/usr/bin:/bin"),
    }
    if "REMEDIATE_WORKER_METRICS_ADDRESS" in env:
        replaced["REMEDIATE_WORKER_METRICS_ADDRESS"] = f"127.0.0.1:{port}"
        replaced["REMEDIATE_WORKER_DRAIN_SECONDS"] = env["REMEDIATE_WORKER_DRAIN_SECONDS"]
    else:
        replaced |= {"REMEDIATE_API_HOST": "127.0.0.1", "REMEDIATE_API_PORT": str(port)}
    missing = sorted(set(replaced) - set(env))
    assert not missing, f"the manifest and the image set none of {missing}"
    env |= replaced
    # Not a container's: where this checkout's code is, a private HOME (no user's Temporal
    # profile), and a queue of this test's own.
    env |= {"PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    env["REMEDIATE_TASK_QUEUE"] = f"deploy-{uuid.uuid4().hex[:8]}"
    healthcheck = launch.healthcheck
    if healthcheck is not None:
        healthcheck = [re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", a) for a in healthcheck]
    return Launch(launch.command, env, launch.probes, healthcheck), port


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Any]:
    started: list[Running] = []

    def run(launch: Launch) -> Running:
        executable = shutil.which(launch.command[0], path=launch.env["PATH"])
        assert executable, f"{launch.command[0]} is not on the image's PATH"
        log = tmp_path / f"{launch.command[0]}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [executable, *launch.command[1:]],
                env=launch.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        started.append(Running(process, log, launch.env))
        return started[-1]

    yield run
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()


async def answers(url: str, running: Running) -> httpx.Response:
    async def probe() -> httpx.Response | None:
        assert running.process.poll() is None, f"exited early:\n{running.output()}"
        try:
            async with httpx.AsyncClient(timeout=3) as client:
                response = await client.get(url)
        except httpx.TransportError:
            return None
        return response

    return await eventually(probe, seconds=30)


async def stop(running: Running) -> tuple[int, float]:
    """SIGTERM, as the kubelet and `docker stop` send it; (exit code, seconds to exit)."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    running.process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(running.process.wait, STOP_SECONDS)
    return code, loop.time() - began


def launch_for(source: str, name: str, tmp_path: Path) -> Launch:
    return k8s_launch(name) if source == "k8s" else compose_launch(name, tmp_path)


@pytest.mark.parametrize("source", SOURCES)
async def test_the_service_answers_its_probes(
    source: str, dev_env: WorkflowEnvironment, tmp_path: Path, start: Any
) -> None:
    launch, port = localize(launch_for(source, "service", tmp_path), dev_env, tmp_path)
    running: Running = start(launch)
    for path in launch.probes:
        response = await answers(f"http://127.0.0.1:{port}{path}", running)
        assert response.status_code == 200, f"{path}: {response.text}"
    if launch.healthcheck is not None:
        check = await asyncio.to_thread(
            subprocess.run, launch.healthcheck, env=launch.env, timeout=30, capture_output=True
        )
        assert check.returncode == 0, check.stderr
    code, _ = await stop(running)
    # uvicorn finishes its requests and its lifespan, then re-raises the signal it caught:
    # the exit a container runtime reports as 143, the expected end of a SIGTERM.
    assert code in (0, -signal.SIGTERM), running.output()
    assert "Application shutdown complete" in running.output()


@pytest.mark.parametrize("source", SOURCES)
async def test_the_worker_polls_and_drains_on_sigterm(
    source: str, dev_env: WorkflowEnvironment, tmp_path: Path, start: Any
) -> None:
    launch, port = localize(launch_for(source, "worker", tmp_path), dev_env, tmp_path)
    running: Running = start(launch)
    for path in launch.probes:
        response = await answers(f"http://127.0.0.1:{port}{path}", running)
        assert response.status_code == 200, f"{path}: {response.text}"
    if launch.healthcheck is not None:
        check = await asyncio.to_thread(
            subprocess.run, launch.healthcheck, env=launch.env, timeout=30, capture_output=True
        )
        assert check.returncode == 0, check.stderr

    async def polling() -> bool:
        described = await dev_env.client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=dev_env.client.namespace,
                task_queue=TaskQueue(name=launch.env["REMEDIATE_TASK_QUEUE"]),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        mine = f"{running.process.pid}@"
        return any(p.identity.startswith(mine) for p in described.pollers)

    await eventually(polling, seconds=30)
    code, seconds = await stop(running)
    assert code == 0, running.output()
    assert seconds < float(launch.env["REMEDIATE_WORKER_DRAIN_SECONDS"])
    assert re.search(r"worker \S+ stopped", running.output())
