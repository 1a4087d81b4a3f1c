"""A process started with a bad setting stops at once with one line naming the variable and
what is wrong, and exit code 2: what an operator reads in `kubectl logs` or `docker logs`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("module", "variable", "value", "says"),
    [
        ("workers.worker", "REMEDIATE_WORKER_DRAIN_SECONDS", "-1", "greater than or equal to 0"),
        ("workers.worker", "REMEDIATE_LOG_FORMAT", "xml", "'json' or 'text'"),
        ("workers.service", "REMEDIATE_API_PORT", "eighty", "valid integer"),
        ("workers.service", "REMEDIATE_CODEC_KEYS", "{not json", "must be JSON"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_code_2(
    module: str, variable: str, value: str, says: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), variable: value}
    done = subprocess.run(
        [sys.executable, "-m", module],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: invalid settings: {variable}: ")
    assert says in line
