"""Trigger -> verified rollback, through the runbook with auto-approval, against a deploy
platform's fake (Vercel by default) and the demo app, beside runbook 000's "~30 seconds to
restore" (`vercel rollback --prod` typed by hand).

Each run: the newest release is broken (the demo app's /health answers 500 and its error rate
is 1.0), the runbook confirms the outage over several probe rounds, finds the last good
release, rolls back (the fake takes `--switch-seconds` to switch, like a real platform),
and verifies health and error rate. Printed: the median of each phase and of the total.

    .venv/bin/python -m benchmarks.rollback [--runs 5] [--platform vercel|railway|generic]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from benchmarks.signing import APPROVALS_TOML, key_env, signed
from infra.fakes.platforms import GENERIC, RAILWAY, VERCEL, Platform, Release
from infra.local_postgres import free_port, postgres_server
from infra.processes import server_process
from workers.worker import WORKFLOW_RUNNER, WORKFLOWS, activities_for
from workflows.models import RunbookInput, RunReport, RunStatus
from workflows.names import SEARCH_ATTRIBUTES

BIN = Path(sys.executable).parent
PLATFORMS = {p.name: p for p in (VERCEL, RAILWAY, GENERIC)}
RUNBOOK_000_SECONDS = 30.0

CONFIG = """
[targets.web]
kind = "http"
health_url = "{app}/health"
probe_urls = ["{app}/orders"]
metrics_url = "{app}/metrics"

[targets.web.deploy]
{deploy}

{approvals}
# Runbook 000 step 1, "verify it is really down": 3 rounds of every probe, 1 s apart.
[runbooks.rollback]
probe_rounds = 3
probe_interval_seconds = 1
down_rounds = 2
verify_consecutive = 3
verify_interval_seconds = 1
verify_deadline_seconds = 60
max_error_rate = 0.01

[runbooks.rollback.gate.auto_approve]
name = "rollback-to-last-good"
actions = ["rollback_deployment"]
max_affected = 1
allow_whole_target = true

# The benchmark rolls one target back many times an hour, on purpose.
[safety]
cooldown_seconds = 0
hourly_budget = 100000
"""

PHASES = (
    ("triggered", "detected", "confirm it is down (probe rounds)"),
    ("detected", "approved", "find releases, plan, auto-approve"),
    ("approved", "rolled_back", "roll back on the platform"),
    ("rolled_back", "verified", "verify healthy N times in a row"),
)


async def one_run(
    env: WorkflowEnvironment, platform: Platform, app: str, switch: float
) -> RunReport:
    releases = [Release.numbered(i, 8, healthy=i < 7) for i in range(8)]
    await platform.scenario(
        releases, current="rel-007", on_switch=f"{app}/debug/release", switch_after_seconds=switch
    )
    workflow_id = f"rollback-web-{uuid.uuid4().hex[:8]}"
    report: RunReport = await env.client.execute_workflow(
        "RollbackWorkflow",
        signed(
            RunbookInput(target="web", requested_by="benchmark", reason="site down"), workflow_id
        ),
        id=workflow_id,
        task_queue="bench",
        result_type=RunReport,
    )
    assert report.status == RunStatus.REMEDIATED, report.summary
    return report


async def main(runs: int, name: str, switch: float) -> None:
    platform = PLATFORMS[name]
    with postgres_server() as pg, tempfile.TemporaryDirectory() as tmp:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("CREATE ROLE app LOGIN PASSWORD 'bench-app-pw'")
            conn.execute("CREATE DATABASE bench OWNER app")
        app_port, fake_port = free_port(), free_port()
        app_env = {**os.environ, "DEMO_DATABASE_URL": pg.dsn("bench", "app", "bench-app-pw")}
        app_cmd = [str(BIN / "uvicorn"), "infra.demo_app:app", "--port", str(app_port)]
        fake_cmd = [sys.executable, "-m", platform.module, "--port", str(fake_port)]
        with (
            server_process([*app_cmd, "--log-level", "error"], app_port, app_env, quiet=True),
            server_process(fake_cmd, fake_port, quiet=True),
        ):
            platform = platform.at(f"http://127.0.0.1:{fake_port}")
            app = f"http://127.0.0.1:{app_port}"
            config = Path(tmp) / "bench.toml"
            config.write_text(
                CONFIG.format(approvals=APPROVALS_TOML, app=app, deploy=platform.deploy_toml())
            )
            os.environ.update(
                {
                    "REMEDIATE_CONFIG": str(config),
                    **key_env(),
                    platform.token_env: platform.token,
                }
            )
            async with (
                await WorkflowEnvironment.start_local(
                    data_converter=pydantic_data_converter,
                    dev_server_existing_path=str(BIN / "temporal"),
                    search_attributes=SEARCH_ATTRIBUTES,
                ) as env,
                Worker(
                    env.client,
                    workflow_runner=WORKFLOW_RUNNER,
                    task_queue="bench",
                    workflows=WORKFLOWS,
                    activities=activities_for(env.client),
                ),
            ):
                await one_run(env, platform, app, switch)  # warm-up
                reports = [await one_run(env, platform, app, switch) for _ in range(runs)]
    _print(reports, name, switch)


def _print(reports: list[RunReport], name: str, switch: float) -> None:
    print(f"runs: {len(reports)} on the {name} fake (platform switch takes {switch:.1f} s)")
    for start, end, label in PHASES:
        spans = [(r.timeline[end] - r.timeline[start]).total_seconds() for r in reports]
        print(f"  {label:<40} median {statistics.median(spans):6.2f} s")
    totals = [(r.timeline["verified"] - r.timeline["triggered"]).total_seconds() for r in reports]
    total = statistics.median(totals)
    print(f"trigger -> verified rollback: median {total:.2f} s, max {max(totals):.2f} s")
    print(
        f"runbook 000 by hand: ~{RUNBOOK_000_SECONDS:.0f} s to restore "
        f"({total / RUNBOOK_000_SECONDS:.0%} of it, with the outage confirmed and verified)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--platform", choices=sorted(PLATFORMS), default="vercel")
    parser.add_argument("--switch-seconds", type=float, default=2.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(args.runs, args.platform, args.switch_seconds))
