"""The Kubernetes manifests, checked offline: every resource against the Kubernetes OpenAPI
schemas (kubernetes-validate bundles them; strict, so a misspelt field fails), the probes
against what the entrypoints serve, secrets referenced and never written down, and the
search-attributes Job's script run for real against the dev server."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.testing import WorkflowEnvironment

from activities.config import parse_config
from tests.deploy_files import (
    K8S_DIR,
    PRODUCTION_CONFIG,
    Manifest,
    dockerfile_instructions,
    image_env,
    k8s_env,
    k8s_manifests,
    k8s_resource,
    only_container,
    search_attributes_listed,
)
from tests.support import BIN
from workers.service import create_app
from workflows.names import SEARCH_ATTRIBUTES, search_attribute_type

# The oldest Kubernetes the manifests promise to work on, and the newest schemas bundled.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
DEPLOYMENTS = ("remediate-worker", "remediate-service")


def resources() -> list[tuple[Path, Manifest]]:
    return [(p, doc) for p, doc in k8s_manifests() if doc["kind"] != "Kustomization"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_resource_matches_the_kubernetes_schema(version: str) -> None:
    checked = 0
    for path, doc in resources():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = ".".join(str(p) for p in err.path)
            pytest.fail(f"{path.name}: {doc['kind']} {doc['metadata']['name']}: {where}: {err}")
        checked += 1
    assert checked >= 7


def test_kustomization_lists_every_file() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    files = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_the_configmap_carries_the_production_config() -> None:
    text = k8s_resource("ConfigMap", "remediate-config")["data"]["config.toml"]
    assert text == PRODUCTION_CONFIG.read_text(), "infra/k8s/config.yaml and production.toml differ"
    parse_config(text, source="remediate-config")


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_deployments_are_replicated_limited_and_locked_down(name: str) -> None:
    deployment = k8s_resource("Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    container = only_container(deployment)
    assert deployment["spec"]["replicas"] >= 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(image_user())
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    assert container["command"] == [name], "the Deployment is named for its console script"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    config_path = Path(k8s_env(container)[0]["REMEDIATE_CONFIG"])
    assert mounts[str(config_path.parent)]["readOnly"] is True
    assert "/tmp" in mounts, "a read-only root needs a writable /tmp"  # noqa: S108
    pdb = k8s_resource("PodDisruptionBudget", name)
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def image_user() -> str:
    users = [i.args for i in dockerfile_instructions() if i.keyword == "USER"]
    return users[-1].split(":")[0]


def test_the_worker_is_given_time_to_drain() -> None:
    deployment = k8s_resource("Deployment", "remediate-worker")
    drain = float(k8s_env(only_container(deployment))[0]["REMEDIATE_WORKER_DRAIN_SECONDS"])
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= drain + 10, "the kubelet would SIGKILL a draining worker"


def named_port(container: Manifest, probe: Manifest) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port in ports, f"probe port {port!r} is not a port of the container"
    return int(ports[port])


def test_service_probes_are_what_it_serves() -> None:
    container = only_container(k8s_resource("Deployment", "remediate-service"))
    env = {**image_env(dockerfile_instructions()), **k8s_env(container)[0]}
    served = {path for path, methods in create_app().openapi()["paths"].items() if "get" in methods}
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] in served
        assert named_port(container, container[probe]) == int(env["REMEDIATE_API_PORT"])
    service = k8s_resource("Service", "remediate-service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == container_labels("remediate-service")


def container_labels(name: str) -> dict[str, str]:
    labels: dict[str, str] = k8s_resource("Deployment", name)["spec"]["template"]["metadata"][
        "labels"
    ]
    return labels


def test_worker_probes_are_its_metrics_endpoint() -> None:
    container = only_container(k8s_resource("Deployment", "remediate-worker"))
    address = k8s_env(container)[0]["REMEDIATE_WORKER_METRICS_ADDRESS"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/metrics"
        assert named_port(container, container[probe]) == int(address.rsplit(":", 1)[1])


def test_secrets_are_referenced_never_written_down() -> None:
    assert not [doc for _, doc in k8s_manifests() if doc["kind"] == "Secret"]
    config = parse_config(PRODUCTION_CONFIG.read_text())
    worker = k8s_env(only_container(k8s_resource("Deployment", "remediate-worker")))
    service = k8s_env(only_container(k8s_resource("Deployment", "remediate-service")))
    assert worker[2] == ["remediate-worker"] and service[2] == ["remediate-service"]
    for values, _, _ in (worker, service):
        assert config.approvals.signing_key.env not in values
        assert "TEMPORAL_API_KEY" not in values, "the API key comes from a Secret"
    assert "TEMPORAL_API_KEY" in worker[1] and "TEMPORAL_API_KEY" in service[1]


def job_container() -> Manifest:
    job = k8s_resource("Job", "remediate-search-attributes")
    containers: list[Manifest] = job["spec"]["template"]["spec"]["containers"]
    return containers[0]


def test_the_job_registers_our_attributes() -> None:
    values = k8s_env(job_container())[0]
    assert search_attributes_listed(values["SEARCH_ATTRIBUTES"]) == {
        key.name: search_attribute_type(key) for key in SEARCH_ATTRIBUTES
    }


async def test_the_job_script_registers_them_once(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The Job's command with its environment, against a namespace of the dev server (the
    operator's, made beforehand); run twice, as a re-applied Job would."""
    namespace = f"k8s-{uuid.uuid4().hex[:8]}"
    await dev_env.client.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=namespace, workflow_execution_retention_period=Duration(seconds=86400)
        )
    )
    container = job_container()
    env: dict[str, Any] = {
        **k8s_env(container)[0],
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": namespace,
        "HOME": str(tmp_path),
        "PATH": f"{BIN}:/usr/bin:/bin",
    }
    for attempt in range(2):
        result = await asyncio.to_thread(
            run_until_namespace_known, container["command"], env, attempt == 0
        )
        assert result.returncode == 0, result.stdout + result.stderr
    listed = await dev_env.client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    for key in SEARCH_ATTRIBUTES:
        assert listed.custom_attributes[key.name] == IndexedValueType.ValueType(
            key.indexed_value_type
        )
    assert "exists" in result.stdout


def run_until_namespace_known(
    command: list[str], env: dict[str, str], first: bool
) -> subprocess.CompletedProcess[str]:
    """The Job's restartPolicy: OnFailure, here: a namespace registered a moment ago is
    unknown to the server's namespace cache for a few seconds, and the kubelet would rerun
    the container until it is known."""
    for _ in range(30 if first else 1):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        if result.returncode == 0 or "not found" not in result.stderr:
            return result
        subprocess.run(["sleep", "1"], check=True)
    return result
