"""The engine reaches Temporal the way the `temporal` CLI does (temporalio.envconfig: TEMPORAL_*
variables, TOML profiles), through a real TLS-terminating proxy (nginx) in front of the dev
server: server TLS, mutual TLS, and the one-line errors of a missing client certificate and a
wrong CA in the worker's and the service's start-up and in the CLI. Configured only through
TEMPORAL_* (REMEDIATE_TEMPORAL_ADDRESS is removed), so nothing else can be what connected."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.deployment import (
    TARGETS,
    Deployment,
    approve_everything,
    process_env,
    send_alert,
    write_deployment_config,
)
from tests.fake_system import CONFIG, FakeSystem
from tests.flag_app import flag_app
from tests.support import start_signed, write_config
from tests.tls_proxy import (
    Certificates,
    api_key_proxy,
    make_certificates,
    proxy_available,
    tls_proxy,
)
from workers.settings import Settings, connect
from workers.temporal_config import TemporalConfigError
from workers.worker import WORKFLOW_RUNNER
from workflows.models import RunbookInput, RunReport, RunStatus
from workflows.pool_restart import PoolRestartWorkflow
from workflows.safety_envelope import SafetyEnvelopeWorkflow

pytestmark = pytest.mark.skipif(
    not proxy_available(), reason="nginx with its stream module (make test installs them)"
)
WORKTREE = str(Path(__file__).resolve().parent.parent)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server_tls(dev_env: WorkflowEnvironment, certs: Certificates) -> Iterator[str]:
    with tls_proxy(dev_env.client.service_client.config.target_host, certs, mutual=False) as at:
        yield at


@pytest.fixture(scope="module")
def mutual_tls(dev_env: WorkflowEnvironment, certs: Certificates) -> Iterator[str]:
    with tls_proxy(dev_env.client.service_client.config.target_host, certs, mutual=True) as at:
        yield at


@pytest.fixture
def temporal_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Only Temporal's own configuration: no REMEDIATE_ address, no profile file by default."""
    for name in [n for n in os.environ if n.startswith("TEMPORAL_")]:
        monkeypatch.delenv(name)
    for name in ("REMEDIATE_TEMPORAL_ADDRESS", "REMEDIATE_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "none.toml"))
    config = write_config(tmp_path, CONFIG.format(auto=""))
    monkeypatch.setenv("REMEDIATE_CONFIG", str(config))
    return {}


def mutual_profile(path: Path, address: str, certs: Certificates) -> Path:
    path.write_text(
        f"""
[profile.secured]
address = "{address}"
namespace = "default"
[profile.secured.tls]
server_ca_cert_path = "{certs.ca}"
client_cert_path = "{certs.client_cert}"
client_key_path = "{certs.client_key}"
"""
    )
    return path


async def dry_run_completes(client: Client) -> None:
    """A worker and a client on `client`'s connection complete a pool_restart dry run."""
    fake = FakeSystem()
    fake.planning_allowed.set()
    queue = f"tls-{uuid.uuid4().hex[:6]}"
    async with Worker(
        client,
        workflow_runner=WORKFLOW_RUNNER,
        task_queue=queue,
        workflows=[PoolRestartWorkflow, SafetyEnvelopeWorkflow],
        activities=fake.activities(client),  # type: ignore[arg-type]
    ):
        wid = f"pool_restart-orders-db-{uuid.uuid4().hex[:8]}"
        params = RunbookInput(target="orders-db", requested_by="alice", dry_run=True)
        handle = await start_signed(
            client, PoolRestartWorkflow.run, params, id=wid, task_queue=queue
        )
        report = await asyncio.wait_for(handle.result(), 60)
    assert report.status == RunStatus.DRY_RUN, report.summary
    assert fake.terminated == []


async def test_server_tls_from_temporal_variables(
    temporal_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    server_tls: str,
    certs: Certificates,
) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", server_tls)
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(certs.ca))
    client = await connect(Settings())
    assert client.service_client.config.target_host == server_tls
    await dry_run_completes(client)


async def test_mutual_tls_from_a_profile_file(
    temporal_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    mutual_tls: str,
    certs: Certificates,
    tmp_path: Path,
) -> None:
    profile = mutual_profile(tmp_path / "temporal.toml", mutual_tls, certs)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(profile))
    monkeypatch.setenv("TEMPORAL_PROFILE", "secured")
    client = await connect(Settings())
    assert client.service_client.config.target_host == mutual_tls
    await dry_run_completes(client)


async def test_no_client_certificate_is_refused_in_one_line(
    temporal_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    mutual_tls: str,
    certs: Certificates,
) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", mutual_tls)
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(certs.ca))
    with pytest.raises(TemporalConfigError) as refused:
        await connect(Settings())
    assert str(refused.value) == (
        f"{mutual_tls} closed the connection after the TLS handshake: it requires a client "
        "certificate: set TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH"
    )


async def test_a_wrong_ca_says_which_setting_to_fix(
    temporal_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    server_tls: str,
    certs: Certificates,
) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", server_tls)
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(certs.other_ca))
    with pytest.raises(TemporalConfigError) as refused:
        await connect(Settings())
    assert str(refused.value) == (
        f"TLS handshake with {server_tls} failed: the server's certificate is not signed by "
        f"the CA in TEMPORAL_TLS_SERVER_CA_CERT_PATH={certs.other_ca}"
    )


async def run_module(module: str, *args: str) -> tuple[int, str, str]:
    """`python -m <module>` of this checkout (cwd first on sys.path), with this environment."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        cwd=WORKTREE,
        env={**os.environ, "PYTHONPATH": WORKTREE},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("module", ["workers.worker", "workers.service"])
async def test_worker_and_service_stop_at_start_up_with_one_line(
    temporal_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    server_tls: str,
    certs: Certificates,
    module: str,
) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", server_tls)
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(certs.other_ca))
    code, _, err = await run_module(module)
    assert code == 2, err
    assert err.splitlines() == [
        f"error: TLS handshake with {server_tls} failed: the server's certificate is not signed "
        f"by the CA in TEMPORAL_TLS_SERVER_CA_CERT_PATH={certs.other_ca}"
    ]


async def test_cli_lists_runs_through_mutual_tls(
    temporal_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    mutual_tls: str,
    certs: Certificates,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", mutual_tls)
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(certs.ca))
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(certs.client_cert))
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", str(certs.client_key))
    code, out, err = await run_module("workers.cli", "list", "--json")
    assert code == 0, err
    assert out.lstrip().startswith("[")

    monkeypatch.delenv("TEMPORAL_TLS_CLIENT_CERT_PATH")
    monkeypatch.delenv("TEMPORAL_TLS_CLIENT_KEY_PATH")
    code, out, err = await run_module("workers.cli", "list")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"error: {mutual_tls} closed the connection after the TLS handshake: it requires a "
        "client certificate: set TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH"
    ]


async def test_worker_and_service_processes_remediate_through_mutual_tls(
    dev_env: WorkflowEnvironment, mutual_tls: str, certs: Certificates, tmp_path: Path
) -> None:
    """The deployment as processes (a worker, the service) reaching Temporal only through the
    mutual-TLS proxy, configured by a profile file as the `temporal` CLI would be: an alert
    to the service starts a run, its two gates are approved through the service, and the
    worker completes it."""
    with flag_app() as app:
        config = write_deployment_config(tmp_path, app.url)
        profile = mutual_profile(tmp_path / "temporal.toml", mutual_tls, certs)
        env = process_env(
            config, {"TEMPORAL_CONFIG_FILE": str(profile), "TEMPORAL_PROFILE": "secured"}
        )
        deployed = Deployment(dev_env.client, env)
        name = TARGETS[0]
        handle = dev_env.client.get_workflow_handle(f"read_only-{name}", result_type=RunReport)
        stop = asyncio.Event()
        try:
            deployed.start_worker()
            service = deployed.start_service()
            assert await send_alert(service, name) == "started"
            approver = asyncio.create_task(approve_everything([service, service], stop))
            report = await asyncio.wait_for(handle.result(), 90)
            stop.set()
            assert await approver == 2
        finally:
            stop.set()
            deployed.stop()
            with contextlib.suppress(Exception):
                await handle.terminate()
    assert report.status == RunStatus.REMEDIATED, report.summary
    assert app.changes == {(name, True): 1, (name, False): 1}


async def test_an_api_key_is_sent_and_a_refused_one_is_one_line(
    dev_env: WorkflowEnvironment,
    temporal_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    certs: Certificates,
) -> None:
    """TEMPORAL_API_KEY, as for Temporal Cloud, through a proxy that checks it: the right key
    completes a run; a wrong one stops the client at connect with one line."""
    key = f"key-{uuid.uuid4().hex}"
    upstream = dev_env.client.service_client.config.target_host
    with api_key_proxy(upstream, certs, key) as address:
        monkeypatch.setenv("TEMPORAL_ADDRESS", address)
        monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(certs.ca))
        monkeypatch.setenv("TEMPORAL_API_KEY", key)
        await dry_run_completes(await connect(Settings()))

        monkeypatch.setenv("TEMPORAL_API_KEY", "key-revoked")
        with pytest.raises(TemporalConfigError) as refused:
            await connect(Settings())
    assert str(refused.value) == (
        f"Temporal at {address} refused the API key (TEMPORAL_API_KEY) for namespace "
        "'default': check the key and the namespace (TEMPORAL_NAMESPACE)"
    )
