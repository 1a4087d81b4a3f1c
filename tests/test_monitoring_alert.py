"""A real alert starts exactly one run: the shipped monitoring (infra/monitoring/) run for real
against the engine as `make run` runs it, with the example config (infra/config/example.toml).

    Postgres ─► postgres-exporter ─► Prometheus (shipped rules) ─► Alertmanager (shipped
    receiver) ─► service POST /alerts/alertmanager ─► Temporal ─► worker: pool_restart

Every piece is its real binary or process: a Postgres of its own (20 connection slots, so a
few sessions saturate it), a Temporal dev server of its own (the example config's fixed
target name gives the fixed workflow id `pool_restart-orders-db`, which must not meet another
test's run), the worker and the service as `python -m`, and Debian's Prometheus,
Alertmanager and postgres-exporter on free ports with their own data directories.

The test's copies of the shipped configs differ only in what makes them fast or local; each
difference is made (and said) in `prometheus_config`, `rules_copy` and `alertmanager_config`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from infra.local_postgres import PostgresServer, free_port, postgres_server
from infra.processes import server_process
from tests.monitoring import (
    EXAMPLE_CONFIG,
    MONITORING,
    POSTGRES_EXPORTER_METRICS,
    RULES,
    SDK_METRICS_AFTER_A_RUN,
    binary,
    load_yaml,
)
from tests.support import BIN, SERVER_STARTUP, eventually, session_keys
from workflows.models import RunReport, RunStatus
from workflows.names import SEARCH_ATTRIBUTES, workflow_id_for
from workflows.runbook import RunbookWorkflow

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_ID = workflow_id_for("pool_restart", "orders-db")  # the example route's
MAX_CONNECTIONS = 30
# Sessions are opened until this share of max_connections is in use: over the rule's 80% and
# the example's usage_threshold, below the 27 slots a non-superuser may fill (3 are reserved).
SATURATED = 0.85
# The test copies' timings (the shipped ones are minutes): fast enough for a test, and slow
# enough that a busy machine does not make them flap.
SCRAPE_INTERVAL = "1s"
FOR_DURATION = "3s"
ALERTMANAGER_TIMING = {"group_wait": "1s", "group_interval": "2s", "repeat_interval": "4s"}


@dataclass(frozen=True)
class Engine:
    client: Client
    service_url: str
    worker_metrics_url: str
    exporter_url: str
    prometheus_url: str
    app_dsn: str
    admin_dsn: str


@pytest.fixture(scope="module")
def database() -> Iterator[PostgresServer]:
    with postgres_server(max_connections=MAX_CONNECTIONS) as server:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("CREATE ROLE app LOGIN PASSWORD 'app-monitoring-pw'")
            conn.execute("CREATE DATABASE orders OWNER app")
        yield server


@pytest.fixture(scope="module")
async def temporal() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=SERVER_STARTUP,
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=SEARCH_ATTRIBUTES,
    )
    async with env:
        yield env


def rules_copy(directory: Path) -> None:
    """The shipped rule files with every `for:` shortened to FOR_DURATION (2m in the shipped
    saturation rule): the expressions, labels and annotations are the shipped ones."""
    directory.mkdir()
    for path in RULES:
        rules = load_yaml(path)
        for group in rules["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = FOR_DURATION
        (directory / path.name).write_text(yaml.safe_dump(rules))


def prometheus_config(ports: dict[str, int], alertmanager_port: int) -> dict[str, Any]:
    """The shipped prometheus.yml, scraping and evaluating every SCRAPE_INTERVAL, with each
    job's target replaced by the local process (labels kept: the alert's `service` and
    `target` come from them) and the blackbox job left out (no web target here; its config
    is checked in tests/test_monitoring_files.py)."""
    config = load_yaml(MONITORING / "prometheus.yml")
    config["global"] = {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL}
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [
        f"127.0.0.1:{alertmanager_port}"
    ]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name, port in ports.items():
        jobs[name]["static_configs"][0]["targets"] = [f"127.0.0.1:{port}"]
    config["scrape_configs"] = [jobs[name] for name in ports]
    assert isinstance(config, dict)
    return config


def alertmanager_config(service_port: int, token_file: Path) -> dict[str, Any]:
    """The shipped alertmanager.yml with the engine's receiver pointed at the local service
    and the token file, and the engine's route's timings shortened (ALERTMANAGER_TIMING:
    1s group wait, repeats every 4s so the test sees several)."""
    config = load_yaml(MONITORING / "alertmanager.yml")
    (route,) = [r for r in config["route"]["routes"] if r["receiver"] == "remediation-engine"]
    route.update(ALERTMANAGER_TIMING)
    (receiver,) = [r for r in config["receivers"] if r["name"] == "remediation-engine"]
    (webhook,) = receiver["webhook_configs"]
    webhook["url"] = f"http://127.0.0.1:{service_port}/alerts/alertmanager"
    webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    assert isinstance(config, dict)
    return config


@pytest.fixture(scope="module")
def engine(
    database: PostgresServer,
    temporal: WorkflowEnvironment,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Engine]:
    work = tmp_path_factory.mktemp("monitoring")
    token = "am-" + uuid.uuid4().hex
    token_file = work / "remediate-intake-token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    config = work / "engine.toml"
    config.write_text(EXAMPLE_CONFIG.read_text())  # the example config, as shipped
    signing, verify = session_keys()
    ports = {
        name: free_port()
        for name in ("service", "worker", "exporter", "prometheus", "alertmanager")
    }
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REMEDIATE_CONFIG": str(config),
        "ORDERS_DB_DSN": database.dsn("orders"),
        "ALERTMANAGER_TOKEN": token,
        "REMEDIATE_APPROVAL_SIGNING_KEY": signing,
        "REMEDIATE_APPROVAL_VERIFY_KEY": verify,
        "REMEDIATE_TEMPORAL_ADDRESS": temporal.client.service_client.config.target_host,
        "REMEDIATE_TASK_QUEUE": f"monitoring-{uuid.uuid4().hex[:6]}",
        "REMEDIATE_API_PORT": str(ports["service"]),
        "REMEDIATE_WORKER_METRICS_ADDRESS": f"127.0.0.1:{ports['worker']}",
    }
    rules_copy(work / "rules")
    prometheus_yml = work / "prometheus.yml"
    scraped = {
        "remediate-worker": ports["worker"],
        "remediate-service": ports["service"],
        "postgres-exporter": ports["exporter"],
    }
    prometheus_yml.write_text(yaml.safe_dump(prometheus_config(scraped, ports["alertmanager"])))
    alertmanager_yml = work / "alertmanager.yml"
    alertmanager_yml.write_text(yaml.safe_dump(alertmanager_config(ports["service"], token_file)))
    exporter_env = {**os.environ, "DATA_SOURCE_NAME": database.dsn() + "?sslmode=disable"}
    local = "127.0.0.1"
    with (
        server_process([sys.executable, "-m", "workers.worker"], ports["worker"], env, quiet=True),
        server_process([sys.executable, "-m", "workers.service"], ports["service"], env),
        server_process(
            [
                binary("postgres_exporter"),
                f"--web.listen-address={local}:{ports['exporter']}",
            ],
            ports["exporter"],
            exporter_env,
            quiet=True,
        ),
        server_process(
            [
                binary("alertmanager"),
                f"--config.file={alertmanager_yml}",
                f"--storage.path={work / 'alertmanager-data'}",
                f"--web.listen-address={local}:{ports['alertmanager']}",
                "--cluster.listen-address=",  # no gossip port: one instance, its own ports
            ],
            ports["alertmanager"],
            quiet=True,
        ),
        server_process(
            [
                binary("prometheus"),
                f"--config.file={prometheus_yml}",
                f"--storage.tsdb.path={work / 'prometheus-data'}",
                f"--web.listen-address={local}:{ports['prometheus']}",
                "--rules.alert.resend-delay=1s",
            ],
            ports["prometheus"],
            quiet=True,
        ),
    ):
        yield Engine(
            client=temporal.client,
            service_url=f"http://{local}:{ports['service']}",
            worker_metrics_url=f"http://{local}:{ports['worker']}/metrics",
            exporter_url=f"http://{local}:{ports['exporter']}/metrics",
            prometheus_url=f"http://{local}:{ports['prometheus']}",
            app_dsn=database.dsn("orders", user="app", password="app-monitoring-pw"),
            admin_dsn=database.dsn(),
        )


async def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A metrics endpoint's samples: (name, labels) -> value."""
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(url)).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)


async def prometheus(engine: Engine, path: str, **params: str) -> Any:
    async with httpx.AsyncClient(base_url=engine.prometheus_url, timeout=10) as http:
        response = await http.get(f"/api/v1/{path}", params=params)
    response.raise_for_status()
    return response.json()["data"]


async def firing_alert(engine: Engine) -> dict[str, Any] | None:
    alerts = (await prometheus(engine, "alerts"))["alerts"]
    found = [a for a in alerts if a["labels"]["alertname"] == "PostgresTooManyConnections"]
    return found[0] if found and found[0]["state"] == "firing" else None


async def scraped_up(engine: Engine) -> bool:
    """Every shipped job Prometheus scrapes here (worker, service, exporter) answers."""
    results = (await prometheus(engine, "query", query="up == 1"))["result"]
    return {r["metric"]["job"] for r in results} == {
        "remediate-worker",
        "remediate-service",
        "postgres-exporter",
    }


def client_sessions(admin_dsn: str) -> int:
    with psycopg.connect(admin_dsn) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        ).fetchone()
    assert row is not None
    return int(row[0]) - 1  # not this one


def saturate(engine: Engine) -> list[psycopg.Connection[tuple[Any, ...]]]:
    """Idle sessions of the app until SATURATED of the slots are in use (the exporter and
    the engine hold some of their own)."""
    sessions: list[psycopg.Connection[tuple[Any, ...]]] = []
    while client_sessions(engine.admin_dsn) < SATURATED * MAX_CONNECTIONS:
        sessions.append(psycopg.connect(engine.app_dsn, application_name="orders-api"))
    print(f"\n{len(sessions)} idle sessions: {client_sessions(engine.admin_dsn)}/{MAX_CONNECTIONS}")
    return sessions


async def test_a_real_saturation_alert_starts_exactly_one_pool_restart(engine: Engine) -> None:
    client = engine.client
    await eventually(lambda: scraped_up(engine), seconds=60, every=0.5)
    assert await firing_alert(engine) is None

    sessions = saturate(engine)
    try:
        saturated = time.time()
        alert = await eventually(lambda: firing_alert(engine), seconds=60, every=0.2)
        fired = time.time()  # when this poll saw it firing: up to 0.2 s late
        # The labels the example route orders-db-connections matches, and the target.
        assert {k: alert["labels"][k] for k in ("service", "target", "runbook", "severity")} == {
            "service": "orders",
            "target": "orders-db",
            "runbook": "pool_restart",
            "severity": "page",
        }

        async def described() -> Any:
            try:
                return await client.get_workflow_handle(WORKFLOW_ID).describe()
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:  # not started yet
                    return None
                raise

        run = await eventually(described, seconds=60, every=0.1)
        started = run.start_time.timestamp()
        print(
            f"\nsaturated -> Prometheus firing: {fired - saturated:.1f}s "
            f"(scrape {SCRAPE_INTERVAL}, for {FOR_DURATION}); "
            f"firing -> run started: {started - fired:.2f}s "
            f"(Alertmanager group_wait {ALERTMANAGER_TIMING['group_wait']})"
        )
        handle = client.get_workflow_handle(WORKFLOW_ID, result_type=RunReport)

        async def waiting() -> bool:
            report = await handle.query(RunbookWorkflow.report)
            return report.status == RunStatus.AWAITING_APPROVAL

        await eventually(waiting, seconds=60)

        # Alertmanager repeats the firing alert every 4 s: each reaches the same run.
        async def repeats_attached() -> bool:
            samples = await scrape(f"{engine.service_url}/metrics")
            duplicates = sum(
                value(samples, "remediate_alerts_total", source="alertmanager", outcome=o)
                for o in ("attached", "coalesced")
            )
            return duplicates >= 2

        await eventually(repeats_attached, seconds=60, every=0.5)
        samples = await scrape(f"{engine.service_url}/metrics")
        assert (
            value(samples, "remediate_alerts_total", source="alertmanager", outcome="started") == 1
        )
        assert value(samples, "remediate_runs_started_total", runbook="pool_restart") == 1
        assert value(samples, "remediate_gates_pending") == 1
        # The gate's wait, from its opening (the run answers the query): positive, and no
        # longer than the run has existed.
        wait = value(samples, "remediate_gate_oldest_wait_seconds")
        assert 0 < wait <= time.time() - started + 1
        # One run, by Temporal's visibility: no second one for the target, of any runbook.
        executions = [e async for e in client.list_workflows("RemediationTarget = 'orders-db'")]
        assert [e.id for e in executions] == [WORKFLOW_ID]

        # The worker's SDK metrics the dashboard reads exist, as named, on its endpoint.
        worker_names = {name for name, _ in await scrape(engine.worker_metrics_url)}
        assert worker_names >= SDK_METRICS_AFTER_A_RUN, SDK_METRICS_AFTER_A_RUN - worker_names
        exporter_names = {name for name, _ in await scrape(engine.exporter_url)}
        assert exporter_names >= POSTGRES_EXPORTER_METRICS
    finally:
        for session in sessions:
            session.close()
    released = time.time()

    # The alert resolves; Alertmanager's resolved notification closes the waiting gate.
    report = await asyncio.wait_for(handle.result(), timeout=90)
    print(
        f"connections released -> run closed by the resolved alert: {time.time() - released:.1f}s"
    )
    assert report.status == RunStatus.RESOLVED
    kinds = [step.kind for step in report.steps]
    assert "alert_resolved" in kinds
    samples = await scrape(f"{engine.service_url}/metrics")
    assert (
        value(
            samples, "remediate_alerts_total", source="alertmanager", outcome="resolved_delivered"
        )
        >= 1
    )
    # Still the one run: the repeats and the resolution started none.
    executions = [e async for e in client.list_workflows(f"WorkflowId = '{WORKFLOW_ID}'")]
    assert len(executions) == 1
