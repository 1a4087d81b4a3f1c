"""`make run`: the engine and its local stack, in the foreground until Ctrl-C (or SIGTERM, or
SIGHUP unless started under nohup).

Starts a Temporal dev server (state in .stack/temporal.db, UI on :8233, search attributes
registered), a Postgres for the demo target (data in .stack/postgres), the AWS emulator
(moto, :5000), the demo app (:8088), a local Vercel fake as the demo's deploy platform
(:8090, three good releases of `web`) and the worker. Writes .stack/demo.env with what the CLI
needs (`source .stack/demo.env`).

Stopping (a signal, or one of its processes exiting: the stack says which, how, and prints the
end of its log in .stack/logs/) terminates every process, kills what is left after 10 s, and
stops Postgres with pg_ctl. Exits 0 when a signal stopped it, 1 when a process exited.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import boto3
import psycopg
from psycopg import sql

from activities.postgres.logins import scram_verifier
from infra.demo_config import (
    API_PORT,
    APP_PORT,
    MOTO_PORT,
    PG_PORT,
    ROOT,
    STATE,
    TEMPORAL_PORT,
    UI_PORT,
    VERCEL_PORT,
    WORKER_METRICS_PORT,
    demo_secrets,
    service_environment,
    ship,
    worker_environment,
)
from infra.local_postgres import LocalCluster
from infra.processes import Supervisor
from workflows.names import SEARCH_ATTRIBUTES, search_attribute_type

BIN = Path(sys.executable).parent
DEMO_BUCKET = "demo-backups"  # the orders database's backups, in the local S3 (moto)
APP_PASSWORD = "orders-app-demo"  # noqa: S105 - the demo app's own role; not an engine credential
APP_LOGINS = ("orders_app_a", "orders_app_b")
APP_LOGIN_ID = "demo/orders-app-db"  # the Secrets Manager secret the demo app logs in with


def _prepare_database(cluster: LocalCluster, superuser_password: str) -> str:
    """The orders database, owned by `app`. The demo app logs in as one of two login roles
    that act as `app` (the key_rotation runbook's alternating users); which one, with which
    password, is in the secret APP_LOGIN_ID (written by `_store_app_login`)."""
    dsn = f"postgresql://postgres:{superuser_password}@127.0.0.1:{cluster.port}/postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'app'").fetchone():
            conn.execute(f"CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'")
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'orders'").fetchone():
            conn.execute("CREATE DATABASE orders OWNER app")
        for user in APP_LOGINS:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [user]).fetchone():
                # Sessions act as `app`, so what they create is app's, whichever login is in use.
                conn.execute(f"CREATE ROLE {user} LOGIN IN ROLE app")
                conn.execute(f"ALTER ROLE {user} SET role = 'app'")
    return dsn.rsplit("/", 1)[0] + "/orders"


def _store_app_login(env: dict[str, str], superuser_dsn: str) -> None:
    """moto keeps secrets in memory: at each start, a fresh password on the first login and
    the secret naming it (AWS's JSON shape), which the demo app reads."""
    password = secrets.token_urlsafe(24)
    with psycopg.connect(superuser_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(APP_LOGINS[0]), sql.Literal(scram_verifier(password))
            )
        )
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD NULL").format(sql.Identifier(APP_LOGINS[1])))
    login = {"engine": "postgres", "host": "127.0.0.1", "port": PG_PORT, "dbname": "orders",
             "username": APP_LOGINS[0], "password": password}  # fmt: skip
    _aws(env, "secretsmanager").create_secret(Name=APP_LOGIN_ID, SecretString=json.dumps(login))


def _aws(env: dict[str, str], service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


def _create_bucket(env: dict[str, str]) -> None:
    _aws(env, "s3").create_bucket(Bucket=DEMO_BUCKET)  # moto keeps buckets in memory


class Stack:
    def __init__(self) -> None:
        self.supervisor = Supervisor(ROOT, STATE / "logs", grace_seconds=10)
        self.cluster: LocalCluster | None = None
        (STATE / "logs").mkdir(parents=True, exist_ok=True)

    def spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.supervisor.spawn(name, cmd, env)

    def wait_for_port(self, port: int, seconds: float) -> None:
        self.supervisor.wait_for_port(port, seconds)

    def start(self) -> None:
        values = demo_secrets()
        temporal = [str(BIN / "temporal"), "server", "start-dev", "--ip", "127.0.0.1"]
        temporal += ["--port", str(TEMPORAL_PORT), "--ui-port", str(UI_PORT)]
        temporal += ["--db-filename", str(STATE / "temporal.db"), "--log-level", "warn"]
        for key in SEARCH_ATTRIBUTES:
            temporal += ["--search-attribute", f"{key.name}={search_attribute_type(key)}"]
        self.spawn("temporal", temporal)

        self.cluster = LocalCluster(
            STATE / "postgres", PG_PORT, values["PG_SUPERUSER_PASSWORD"], max_connections=100
        )
        self.cluster.init()
        self.cluster.stop()  # a previous run killed without cleanup leaves a server behind
        log_offset = self.cluster.log.stat().st_size if self.cluster.log.exists() else 0
        self.cluster.start()
        if (pid := self.cluster.server_pid()) is not None:
            self.supervisor.track("postgres", pid, self.cluster.log, log_offset)
        orders_dsn = _prepare_database(self.cluster, values["PG_SUPERUSER_PASSWORD"])

        self.spawn("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(MOTO_PORT)])
        worker_env = worker_environment(values)
        self.wait_for_port(MOTO_PORT, 30)
        _create_bucket(worker_env)
        _store_app_login(worker_env, orders_dsn)
        aws = {k: v for k, v in worker_env.items() if k.startswith("AWS_")}
        self.spawn(
            "demo-app",
            [
                str(BIN / "uvicorn"),
                "infra.demo_app:app",
                "--port",
                str(APP_PORT),
                "--no-access-log",
            ],
            aws
            | {
                "DEMO_DB_SECRET_ARN": APP_LOGIN_ID,
                "DEMO_ADMIN_TOKEN": values["DEMO_APP_ADMIN_TOKEN"],
            },
        )
        vercel = [sys.executable, "-m", "infra.fakes.vercel", "--port", str(VERCEL_PORT)]
        self.spawn("vercel", vercel)
        self.wait_for_port(TEMPORAL_PORT, 60)
        self.wait_for_port(APP_PORT, 30)
        self.wait_for_port(VERCEL_PORT, 30)
        asyncio.run(ship(values["VERCEL_TOKEN"], broken=False))
        self.spawn(
            "worker",
            [sys.executable, "-m", "workers.worker"],
            worker_env
            | {
                "REMEDIATE_WORKER_METRICS_ADDRESS": f"127.0.0.1:{WORKER_METRICS_PORT}",
                "REMEDIATE_LOG_FORMAT": "text",  # read by a person in the stack's log files
            },
        )
        self.spawn(
            "service",
            [sys.executable, "-m", "workers.service"],
            service_environment(values)
            | {"REMEDIATE_API_PORT": str(API_PORT), "REMEDIATE_LOG_FORMAT": "text"},
        )
        self.wait_for_port(API_PORT, 30)
        (STATE / "demo.env").write_text(
            f"export PATH={BIN}:$PATH\n"
            f"export REMEDIATE_CONFIG={ROOT / 'infra/config/example.toml'}\n"
            f"export REMEDIATE_API_URL=http://127.0.0.1:{API_PORT}\n"
            "export REMEDIATE_TOKEN=demo-alice-token\n"
            f"export ALERTMANAGER_TOKEN={values['ALERTMANAGER_TOKEN']}\n"
        )
        print(
            f"stack up: Temporal UI http://127.0.0.1:{UI_PORT}  intake/approvals "
            f"http://127.0.0.1:{API_PORT}  demo app "
            f"http://127.0.0.1:{APP_PORT}/health  Postgres 127.0.0.1:{PG_PORT}  "
            f"AWS emulator http://127.0.0.1:{MOTO_PORT}  Vercel fake http://127.0.0.1:{VERCEL_PORT}\n"
            f"logs in {STATE / 'logs'}; in another shell: source .stack/demo.env  "
            f"(Ctrl-C or kill -TERM {os.getpid()} stops it)",
            flush=True,
        )

    def stop_postgres(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()


def main() -> None:
    stack = Stack()
    raise SystemExit(stack.supervisor.run(stack.start, stack.stop_postgres))


if __name__ == "__main__":
    main()
