"""The senders a run talks back to, for the tests: Debian's Alertmanager and the local fakes
of PagerDuty's REST API and Slack's Web API (infra/fakes/), each a process on a free port."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from infra.local_postgres import free_port
from infra.processes import server_process
from tests.monitoring import binary

# The PagerDuty user the engine writes as (a user of the fake's scenario).
ONCALL = "oncall-bot@example.com"


@dataclass(frozen=True)
class Senders:
    alertmanager: str
    pagerduty: str
    slack: str


def _fake(module: str) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", f"infra.fakes.{module}", "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with server_process(command, port, env, quiet=True):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module", name="senders")
def senders_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Senders]:
    work = tmp_path_factory.mktemp("alertmanager")
    config = work / "alertmanager.yml"
    config.write_text(
        yaml.safe_dump({"route": {"receiver": "nobody"}, "receivers": [{"name": "nobody"}]})
    )
    port = free_port()
    alertmanager = [
        binary("alertmanager"),
        f"--config.file={config}",
        f"--storage.path={work / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # one instance, no gossip port
    ]
    pagerduty, slack = _fake("pagerduty"), _fake("slack")
    with server_process(alertmanager, port, quiet=True):
        yield Senders(f"http://127.0.0.1:{port}", next(pagerduty), next(slack))
    for fake in (pagerduty, slack):
        next(fake, None)  # stops it
