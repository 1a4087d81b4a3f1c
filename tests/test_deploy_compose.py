"""The Compose install, checked without a Docker engine: `docker-compose config` (Debian's
docker-compose, which needs no engine for it) resolves the file as a user would after copying
the *.env examples, and what it resolves is the install the README describes. The
search-attribute registration script runs for real against the test dev server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from activities.config import parse_config
from tests.deploy_files import (
    PRODUCTION_CONFIG,
    compose_config,
    compose_project,
    search_attributes_listed,
)
from tests.support import BIN
from workflows.names import SEARCH_ATTRIBUTES, search_attribute_type

ENGINE = ("worker", "service")
ONE_SHOT = ("temporal-schema", "temporal-search-attributes")
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (what a container must listen on)
USER_ENV = {"TEMPORAL_DB_PASSWORD": "db-pw-from-dotenv"}


@pytest.fixture(scope="module")
def compose_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = compose_project(tmp_path_factory.mktemp("compose"))
    # What the README asks for: .env filled in (here: the one secret Compose interpolates).
    (directory / ".env").write_text(
        (directory / ".env").read_text().replace("change-me", USER_ENV["TEMPORAL_DB_PASSWORD"])
    )
    return directory


@pytest.fixture(scope="module")
def resolved(compose_dir: Path) -> dict[str, Any]:
    result = compose_config(compose_dir, {})
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_compose_resolves_the_whole_install(resolved: dict[str, Any]) -> None:
    assert set(resolved["services"]) == {
        "postgresql",
        "temporal-schema",
        "temporal",
        "temporal-search-attributes",
        "temporal-ui",
        *ENGINE,
    }
    assert set(resolved["volumes"]) == {"temporal-db"}


def test_images_are_pinned(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        image = service["image"]
        tag = image.rsplit(":", 1)[-1]
        assert tag != "latest" and "." in tag, f"{name}: pin {image} to a release"


def test_start_up_order_waits_for_each_step(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    conditions = {
        name: {dep: spec["condition"] for dep, spec in s.get("depends_on", {}).items()}
        for name, s in services.items()
    }
    assert conditions["temporal-schema"] == {"postgresql": "service_healthy"}
    assert conditions["temporal"] == {"temporal-schema": "service_completed_successfully"}
    assert conditions["temporal-search-attributes"] == {"temporal": "service_healthy"}
    for name in ENGINE:
        assert conditions[name] == {"temporal-search-attributes": "service_completed_successfully"}
    for name in ("postgresql", "temporal", *ENGINE):
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"


def test_engine_containers(resolved: dict[str, Any], compose_dir: Path) -> None:
    services = resolved["services"]
    config = compose_dir.parent / "config" / "production.toml"
    config_mount = f"{config}:/etc/remediate/config.toml:ro"
    for name in ENGINE:
        service = services[name]
        assert service["command"] == [f"remediate-{name}"]
        assert service["build"]["context"] == str(compose_dir.parent.parent)
        assert service["volumes"] == [config_mount], "the config is mounted read-only"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert service["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"
    worker, service = services["worker"]["environment"], services["service"]["environment"]
    # The signing key reaches the service alone; both verify.
    assert "REMEDIATE_APPROVAL_SIGNING_KEY" in service
    assert "REMEDIATE_APPROVAL_SIGNING_KEY" not in worker
    assert "REMEDIATE_APPROVAL_VERIFY_KEY" in worker and "REMEDIATE_APPROVAL_VERIFY_KEY" in service
    assert worker["REMEDIATE_WORKER_METRICS_ADDRESS"] == f"{ALL_INTERFACES}:9464"
    drain = float(worker["REMEDIATE_WORKER_DRAIN_SECONDS"])
    assert drain < float(services["worker"]["stop_grace_period"].rstrip("s"))
    assert service["REMEDIATE_API_HOST"] == ALL_INTERFACES
    assert services["service"]["ports"] == ["127.0.0.1:8000:8000/tcp"]


def test_every_config_reference_is_in_an_env_file(compose_dir: Path) -> None:
    """Each `{ env = ... }` of the mounted config is a variable of the env file of the process
    that resolves it (the signing key the service's, the rest both or the worker's)."""
    config = parse_config(PRODUCTION_CONFIG.read_text())
    names = {
        f: {line.split("=")[0] for line in (compose_dir / f).read_text().splitlines()}
        for f in ("worker.env", "service.env")
    }
    assert config.approvals.signing_key.env in names["service.env"]
    assert {"REMEDIATE_APPROVAL_VERIFY_KEY", "ORDERS_DB_DSN"} <= names["worker.env"]
    for ref in config.intake.alertmanager_tokens:
        assert ref.env in names["service.env"]


def test_the_db_password_is_required(compose_dir: Path) -> None:
    (compose_dir / ".env").rename(compose_dir / "dotenv.saved")
    try:
        result = compose_config(compose_dir, {})
    finally:
        (compose_dir / "dotenv.saved").rename(compose_dir / ".env")
    assert result.returncode != 0
    assert "set TEMPORAL_DB_PASSWORD in infra/compose/.env" in result.stderr


def test_the_password_comes_from_dotenv_only(resolved: dict[str, Any]) -> None:
    password = USER_ENV["TEMPORAL_DB_PASSWORD"]
    services = resolved["services"]
    assert services["postgresql"]["environment"]["POSTGRES_PASSWORD"] == password
    assert services["temporal"]["environment"]["POSTGRES_PWD"] == password
    for name in ENGINE:
        assert password not in yaml.safe_dump(services[name]), f"{name} sees Temporal's DB"


def test_search_attributes_job_names_ours(resolved: dict[str, Any]) -> None:
    env = resolved["services"]["temporal-search-attributes"]["environment"]
    assert search_attributes_listed(env["SEARCH_ATTRIBUTES"]) == {
        key.name: search_attribute_type(key) for key in SEARCH_ATTRIBUTES
    }


async def test_registration_script_creates_namespace_and_attributes(
    dev_env: WorkflowEnvironment, compose_dir: Path, resolved: dict[str, Any]
) -> None:
    """The script the one-shot service runs, with its resolved environment, against the dev
    server; a second run (the next `up`) changes nothing and succeeds."""
    job = resolved["services"]["temporal-search-attributes"]
    namespace = f"compose-{uuid.uuid4().hex[:8]}"
    env = {
        **job["environment"],
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": namespace,
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(compose_dir),
    }
    script = compose_dir / "scripts" / Path(job["command"][0]).name
    for _ in range(2):
        result = await asyncio.to_thread(
            subprocess.run,
            [*job["entrypoint"], str(script)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    assert "exists" in result.stdout
    listed = await dev_env.client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    for key in SEARCH_ATTRIBUTES:
        assert listed.custom_attributes[key.name] == IndexedValueType.ValueType(
            key.indexed_value_type
        )


def test_setup_script_is_valid_shell(compose_dir: Path) -> None:
    for script in (compose_dir / "scripts").glob("*.sh"):
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
        subprocess.run(["sh", "-n", str(script)], check=True, timeout=10)
