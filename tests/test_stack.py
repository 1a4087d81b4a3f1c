"""How the local stack (`make run`) stops: the Supervisor of infra.processes, run in its own
process on small real children (sleep, sh), sent real signals.

The whole stack is not started here: its ports and its .stack/ directory are fixed, so a test
run would collide with (and stop the Postgres of) a `make run` going on the same machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# argv: log dir, grace seconds, {name: command} to spawn, pids to track (started elsewhere).
SUPERVISED = """
import json, sys
from pathlib import Path
from infra.processes import Supervisor

supervisor = Supervisor(Path.cwd(), Path(sys.argv[1]), grace_seconds=float(sys.argv[2]))

def start() -> None:
    for name, command in json.loads(sys.argv[3]).items():
        supervisor.spawn(name, command)
    for name, pid in json.loads(sys.argv[4]).items():
        supervisor.track(name, pid)
    print("up", json.dumps({child.name: child.pid for child in supervisor.children}), flush=True)

raise SystemExit(supervisor.run(start))
"""


@dataclass
class Run:
    process: subprocess.Popen[str]
    pids: dict[str, int]

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def finish(self) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=30)
        return self.process.returncode, out, err


def supervise(
    tmp_path: Path,
    children: dict[str, list[str]],
    ignored: str = "INT",  # as for `cmd &` in a script; "HUP INT" as under `nohup cmd &`
    grace: float = 5,
    tracked: dict[str, int] | None = None,
) -> Run:
    command = [sys.executable, "-c", SUPERVISED, str(tmp_path / "logs"), str(grace)]
    command += [json.dumps(children), json.dumps(tracked or {})]
    process = subprocess.Popen(
        ["sh", "-c", f"trap '' {ignored}; exec \"$@\"", "sh", *command],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("up "):
        process.kill()
        pytest.fail(f"the supervisor did not start: {line}{process.communicate()[1]}")
    return Run(process, json.loads(line[3:]))


def wait_for_log(path: Path, text: str) -> None:
    deadline = time.monotonic() + 10
    while not (path.exists() and text in path.read_text()):
        assert time.monotonic() < deadline, f"{text!r} not in {path}"
        time.sleep(0.05)


def assert_gone(pids: list[int]) -> None:
    """Nothing left in any child's process group (what a child started included)."""
    deadline = time.monotonic() + 5
    left = pids
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if _group_exists(pid)]
        time.sleep(0.05)
    assert not left, f"process groups still there: {left}"


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


SLEEPERS = {"temporal": ["sleep", "60"], "demo-app": ["sh", "-c", "sleep 60 & wait"]}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_stops_every_child_and_says_which(tmp_path: Path, signum: signal.Signals) -> None:
    # SIGINT starts ignored, as for a background job of a script: it stops the stack anyway.
    run = supervise(tmp_path, SLEEPERS)
    run.signal(signum)
    returncode, out, err = run.finish()
    assert returncode == 0, err
    assert out.splitlines() == [f"stopping the stack: {signum.name} received", "the stack stopped"]
    assert err == ""
    assert_gone(list(run.pids.values()))


@pytest.mark.timeout(60)
def test_under_nohup_sighup_is_still_ignored(tmp_path: Path) -> None:
    run = supervise(tmp_path, SLEEPERS, ignored="HUP INT")
    run.signal(signal.SIGHUP)
    with pytest.raises(subprocess.TimeoutExpired):
        run.process.wait(timeout=1)
    run.signal(signal.SIGTERM)
    returncode, out, _ = run.finish()
    assert returncode == 0
    assert "stopping the stack: SIGTERM received" in out
    assert_gone(list(run.pids.values()))


@pytest.mark.timeout(60)
def test_a_killed_child_is_named_with_its_signal_and_log(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs/demo-app.log").write_text("from an earlier run\n")
    talker = 'for i in $(seq 1 25); do echo "line $i"; done; exec sleep 60'
    run = supervise(tmp_path, {"temporal": ["sleep", "60"], "demo-app": ["sh", "-c", talker]})
    wait_for_log(tmp_path / "logs/demo-app.log", "line 25\n")
    os.kill(run.pids["demo-app"], signal.SIGKILL)
    returncode, out, err = run.finish()
    assert returncode == 1
    log = tmp_path / "logs/demo-app.log"
    assert err.splitlines() == [
        f"demo-app (pid {run.pids['demo-app']}) was killed by SIGKILL",
        f"last 20 lines of {log}:",
        *(f"  | line {i}" for i in range(6, 26)),
        "stopping the stack",
    ]
    assert out.splitlines() == ["the stack stopped"]
    assert_gone(list(run.pids.values()))


@pytest.mark.timeout(60)
def test_a_child_exiting_is_named_with_its_exit_code(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs/worker.log").write_text("from an earlier run\n")
    quitter = ["sh", "-c", "sleep 0.5; echo 'cannot reach Temporal' >&2; exit 3"]
    run = supervise(tmp_path, {"temporal": ["sleep", "60"], "worker": quitter})
    returncode, _, err = run.finish()
    assert returncode == 1
    assert err.splitlines() == [
        f"worker (pid {run.pids['worker']}) exited with code 3",
        f"last 1 line of {tmp_path / 'logs/worker.log'}:",
        "  | cannot reach Temporal",
        "stopping the stack",
    ]
    assert_gone(list(run.pids.values()))


@pytest.mark.timeout(60)
def test_a_tracked_server_that_dies_is_named(tmp_path: Path) -> None:
    # Postgres runs detached (pg_ctl); the stack watches its pid. Here: a zombie until reaped.
    outsider = subprocess.Popen(["sleep", "60"])
    try:
        run = supervise(tmp_path, SLEEPERS, tracked={"postgres": outsider.pid})
        outsider.kill()
        returncode, _, err = run.finish()
    finally:
        outsider.kill()
        outsider.wait()
    assert returncode == 1
    assert err.splitlines()[0] == (
        f"postgres (pid {outsider.pid}) is no longer running "
        "(not a child of the stack: exit status unknown)"
    )
    assert_gone([run.pids["temporal"], run.pids["demo-app"]])


@pytest.mark.timeout(60)
def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    stubborn = ["sh", "-c", "trap '' TERM; echo ignoring; sleep 60 & wait"]
    run = supervise(tmp_path, {"temporal": ["sleep", "60"], "worker": stubborn}, grace=1)
    wait_for_log(tmp_path / "logs/worker.log", "ignoring")
    started = time.monotonic()
    run.signal(signal.SIGTERM)
    returncode, out, err = run.finish()
    assert returncode == 0
    assert 1 <= time.monotonic() - started < 10
    assert err.splitlines() == [
        f"worker (pid {run.pids['worker']}) still running 1s after SIGTERM: killed"
    ]
    assert out.splitlines() == ["stopping the stack: SIGTERM received", "the stack stopped"]
    assert_gone(list(run.pids.values()))
