"""A real Postgres server for the dev stack and the tests.

With a Docker engine, testcontainers runs the official image; without one, the PostgreSQL 15
binaries on the machine run a throwaway cluster on a local port. Either way the caller gets a
superuser DSN with a password (so tests can check that no password reaches a history).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str

    def dsn(self, database: str = "postgres", user: str | None = None, password: str = "") -> str:
        user = user or self.user
        password = password or self.password
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{database}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=20)
    return probe.returncode == 0


def _as_postgres_user(cmd: list[str]) -> list[str]:
    # Postgres refuses to run as root; CI and dev machines here run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user="postgres", group="postgres")


class LocalCluster:
    """A Postgres cluster in a directory, started with pg_ctl."""

    def __init__(self, data_dir: Path, port: int, password: str, max_connections: int) -> None:
        self.data_dir, self.port = data_dir, port
        self.password, self.max_connections = password, max_connections

    def init(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _own(self.data_dir)
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.pw"
        pwfile.write_text(self.password)
        _own(pwfile)
        try:
            subprocess.run(
                _as_postgres_user(
                    [
                        str(PG_BIN / "initdb"),
                        "-D",
                        str(self.data_dir),
                        "-U",
                        "postgres",
                        "--auth=scram-sha-256",
                        f"--pwfile={pwfile}",
                        "--encoding=UTF8",
                        "--no-sync",
                    ]
                ),
                check=True,
                capture_output=True,
            )
        finally:
            pwfile.unlink()

    @property
    def log(self) -> Path:
        return self.data_dir / "server.log"

    def server_pid(self) -> int | None:
        """The postmaster's pid as its postmaster.pid file says (None without one)."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        except OSError:
            return None
        return int(first) if first.isdigit() else None

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1"
            f" -c unix_socket_directories={self.data_dir}"
            f" -c max_connections={self.max_connections} -c fsync=off"
        )
        log = self.log
        subprocess.run(
            _as_postgres_user(
                [
                    *(str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-o", options),
                    *("-l", str(log), "-w", "-t", "60", "start"),
                ]
            ),
            check=True,
            capture_output=True,
        )
        wait_for_port("127.0.0.1", self.port, 30)

    def stop(self) -> None:
        subprocess.run(
            _as_postgres_user(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"]
            ),
            check=False,
            capture_output=True,
        )


def wait_for_port(host: str, port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {host}:{port} after {seconds}s")


@contextlib.contextmanager
def postgres_server(max_connections: int = 100) -> Iterator[PostgresServer]:
    """A throwaway Postgres server, from Docker if there is one, else the local binaries."""
    password = "pw-" + os.urandom(8).hex()
    if docker_available() and not os.environ.get("REMEDIATE_NO_DOCKER"):
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer(
            "postgres:15", username="postgres", password=password, dbname="postgres"
        ).with_command(f"postgres -c max_connections={max_connections}")
        with container:
            yield PostgresServer(
                host=container.get_container_host_ip(),
                port=int(container.get_exposed_port(5432)),
                user="postgres",
                password=password,
            )
        return
    with tempfile.TemporaryDirectory(prefix="remediate-pg-") as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 - the postgres user must reach its data dir
        cluster = LocalCluster(Path(tmp) / "data", free_port(), password, max_connections)
        cluster.init()
        cluster.start()
        try:
            yield PostgresServer("127.0.0.1", cluster.port, "postgres", password)
        finally:
            cluster.stop()
