"""The deployment files as the deploy tests read them: the Dockerfile's instructions, the
Kubernetes manifests, the Compose file resolved by `docker-compose config`, and the commands
and environments they give the engine's processes."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "infra" / "image" / "requirements.lock"
COMPOSE_DIR = ROOT / "infra" / "compose"
K8S_DIR = ROOT / "infra" / "k8s"
PRODUCTION_CONFIG = ROOT / "infra" / "config" / "production.toml"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, ...
    args: str  # the rest of the logical line, continuations joined


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Logical lines (backslash continuations joined, comments and blanks dropped)."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(args.split())))
        pending = ""
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    return instructions[starts[-1] :]


def image_env(instructions: list[Instruction]) -> dict[str, str]:
    """The final stage's ENV (KEY=value pairs; `$PATH` left as written)."""
    env: dict[str, str] = {}
    for ins in final_stage(instructions):
        if ins.keyword == "ENV":
            for pair in shlex.split(ins.args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def exec_form(args: str) -> list[str]:
    """CMD/ENTRYPOINT in exec form (a JSON array); anything else is a failure to report."""
    parsed = yaml.safe_load(args)
    if not isinstance(parsed, list) or not all(isinstance(a, str) for a in parsed):
        raise AssertionError(f"not in exec form (a JSON array of strings): {args}")
    return parsed


def locked_pins(path: Path = LOCK) -> dict[str, str]:
    """{canonical name: version} of a `uv pip compile --generate-hashes` lock."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ \\;]+)", line)
        if match:
            pins[canonical(match[1])] = match[2]
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def k8s_manifests() -> Iterator[tuple[Path, Manifest]]:
    """Every resource of every YAML file under infra/k8s (the kustomization included)."""
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def k8s_resource(kind: str, name: str) -> Manifest:
    for _, doc in k8s_manifests():
        if doc.get("kind") == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} under {K8S_DIR}")


def only_container(deployment: Manifest) -> Manifest:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{deployment['metadata']['name']}: one container expected"
    container: Manifest = containers[0]
    return container


def k8s_env(container: Manifest) -> tuple[dict[str, str], list[str], list[str]]:
    """A container's environment as the manifests give it: (plain values, including those of
    the ConfigMaps it reads whole; names of variables read from Secrets; Secrets read whole)."""
    values: dict[str, str] = {}
    from_secrets: list[str] = []
    whole_secrets: list[str] = []
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            values.update(k8s_resource("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            whole_secrets.append(source["secretRef"]["name"])
    for variable in container.get("env", []):
        if "value" in variable:
            values[variable["name"]] = variable["value"]
        elif "secretKeyRef" in variable.get("valueFrom", {}):
            from_secrets.append(variable["name"])
        else:
            raise AssertionError(f"{variable['name']}: only values and Secret references")
    return values, from_secrets, whole_secrets


def compose_project(directory: Path) -> Path:
    """A copy of what docker-compose.yml refers to (the compose directory with its *.env
    files made from the examples, the config, the build context's Dockerfile), so `config`
    can run without touching the repo; returns the copied compose directory."""
    compose = directory / "infra" / "compose"
    shutil.copytree(COMPOSE_DIR, compose, ignore=shutil.ignore_patterns(".env", "*.env"))
    shutil.copytree(PRODUCTION_CONFIG.parent, directory / "infra" / "config")
    shutil.copy(DOCKERFILE, directory / "Dockerfile")
    for example in compose.glob("*.example"):
        example.with_suffix("").write_text(example.read_text())
    return compose


def compose_config(
    compose_dir: Path, environ: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` in `compose_dir`, with only `environ` (and PATH) set."""
    return subprocess.run(
        ["docker-compose", "config"],
        cwd=compose_dir,
        env={"PATH": "/usr/bin:/bin", **environ},
        capture_output=True,
        text=True,
        timeout=60,
    )


def search_attributes_listed(value: str) -> dict[str, str]:
    """`NAME=Type NAME=Type` as the registration scripts read SEARCH_ATTRIBUTES."""
    return dict(pair.split("=", 1) for pair in value.split())
