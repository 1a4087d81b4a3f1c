"""Real servers in their own processes, for the tests, the benchmarks and the local stack."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from infra.local_postgres import wait_for_port


@contextmanager
def server_process(
    command: list[str],
    port: int,
    env: dict[str, str] | None = None,
    quiet: bool = False,
    start_seconds: float = 30,
) -> Iterator[None]:
    """A real server in its own process: started, awaited on its port, stopped."""
    output = subprocess.DEVNULL if quiet else None
    process = subprocess.Popen(command, env=env, stdout=output, stderr=output)
    try:
        wait_for_port("127.0.0.1", port, start_seconds)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)
