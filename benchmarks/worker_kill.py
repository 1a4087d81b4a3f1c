"""Issue 17: what a worker's SIGKILL costs the runs in flight.

Three worker processes (`python -m workers.worker`, as the image runs them) on one task queue
of a dev server; read_only runs (enter read-only, verify, hold 1 s, leave, verify, both gates
auto-approved), each on its own target of a many-target HTTP app (tests/flag_app.py),
started `--rate` a second. Two batches of `--runs`: a baseline, then the same with one worker
SIGKILLed once `--kill-at` of the batch has been started. From every run's history:

- outcomes (every run should end Remediated) and run durations;
- stall: the longest time a run made no progress (no event in its history) after the kill
  (for the baseline, after the same point of its batch), and the event that ended it;
- delay: a run's stall minus the baseline's median stall: the time the kill cost it;
- what the runs whose history shows the kill waited on (a retried activity, a workflow task
  that timed out).

    .venv/bin/python -m benchmarks.worker_kill [--runs 200] [--rate 2] [--kill-at 0.5]

The figures are indicative: the machine's two cores run the dev server, the app, the three
workers and this process, and the stall of a run touched by the kill includes the time its
retried step then takes on a machine left with two workers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from temporalio.api.enums.v1 import EventType, TaskQueueType, TimeoutType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from benchmarks.signing import APPROVALS_TOML, key_env, signed
from tests.flag_app import flag_app
from workflows.models import RunbookInput, RunReport
from workflows.names import SEARCH_ATTRIBUTES, workflow_id_for

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
QUEUE = "bench-kill"

TARGET = """
[targets.{name}]
kind = "http"
health_url = "{app}/t/{name}/health"

[targets.{name}.app_flag]
url = "{app}/t/{name}/maintenance"
write_probe_url = "{app}/t/{name}/orders"
read_probe_url = "{app}/t/{name}/orders"
"""
COMMON = """
[runbooks.read_only]
hold_ttl = 1
remind_every = 600
verify_consecutive = 2
verify_interval_seconds = 0.5
verify_deadline_seconds = 60

[runbooks.read_only.gate.auto_approve]
name = "bench"
actions = ["enter_read_only", "exit_read_only"]
max_affected = 1
allow_whole_target = true

# Every target is remediated once; the budget is not what is measured.
[safety]
cooldown_seconds = 0
hourly_budget = 100000
"""


@dataclass
class Run:
    workflow_id: str
    report: RunReport | None = None
    events: list[HistoryEvent] = field(default_factory=list)

    def times(self) -> list[datetime]:
        return [e.event_time.ToDatetime(tzinfo=UTC) for e in self.events]

    def stall_after(self, kill: datetime) -> tuple[float, str]:
        """The longest time without an event in the run's history after `kill` (a gap that
        began before it counts from it), and the event that ended it."""
        times = self.times()
        if not times or times[-1] <= kill:
            return 0.0, ""
        longest, ended_by = 0.0, ""
        for i in range(1, len(times)):
            at, before = times[i], times[i - 1]
            if at > kill and (gap := (at - max(before, kill)).total_seconds()) > longest:
                longest, ended_by = gap, self.describe(self.events[i])
        return longest, ended_by

    def describe(self, event: HistoryEvent) -> str:
        """The event's type, and for an activity's, the activity's."""
        name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        scheduled = {
            e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
            for e in self.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        }
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            scheduled_by = event.activity_task_started_event_attributes.scheduled_event_id
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            scheduled_by = event.activity_task_completed_event_attributes.scheduled_event_id
        else:
            return name
        return f"{name} {scheduled.get(scheduled_by, '?')}"

    def touched(self) -> list[str]:
        """What the run waited on because of a dead worker."""
        found = []
        for e in self.events:
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                attempt = e.activity_task_started_event_attributes.attempt
                if attempt > 1:
                    found.append(f"activity retried (attempt {attempt})")
            elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
                failure = e.activity_task_timed_out_event_attributes.failure
                kind = failure.timeout_failure_info.timeout_type
                found.append(f"activity timed out ({TimeoutType.Name(kind)})")
            elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
                kind = e.workflow_task_timed_out_event_attributes.timeout_type
                found.append(f"workflow task timed out ({kind})")
        return found


def write_config(directory: Path, app: str, names: list[str]) -> Path:
    path = directory / "bench.toml"
    path.write_text(
        "".join(TARGET.format(name=n, app=app) for n in names) + COMMON + APPROVALS_TOML
    )
    return path


def start_workers(count: int, env: dict[str, str], logs: Path) -> list[subprocess.Popen[bytes]]:
    processes = []
    for number in range(count):
        log = (logs / f"worker-{number}.log").open("wb")
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "workers.worker"],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return processes


async def polling(client: Client, count: int) -> None:
    """Until `count` workers poll the queue for activities (they take seconds to start)."""
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=QUEUE),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
    )
    deadline = time.monotonic() + 120
    while len((await client.workflow_service.describe_task_queue(request)).pollers) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"{count} workers did not poll {QUEUE} within 2 min: see their logs")
        await asyncio.sleep(0.5)


async def start_runs(client: Client, names: list[str], rate: float, started: list[str]) -> None:
    for name in names:
        workflow_id = workflow_id_for("read_only", name)
        params = RunbookInput(target=name, requested_by="benchmark", reason="worker kill")
        await client.start_workflow(
            "ReadOnlyWorkflow", signed(params, workflow_id), id=workflow_id, task_queue=QUEUE
        )
        started.append(workflow_id)
        await asyncio.sleep(1 / rate)


async def collect(client: Client, workflow_id: str) -> Run:
    handle = client.get_workflow_handle(workflow_id, result_type=RunReport)
    run = Run(workflow_id, report=await handle.result())
    run.events = list((await handle.fetch_history()).events)
    return run


@dataclass
class Batch:
    runs: list[Run]
    moment: datetime  # the kill, or the same point of a batch without one

    def stalls(self) -> dict[str, tuple[float, str]]:
        return {r.workflow_id: r.stall_after(self.moment) for r in self.runs}

    def report(self, label: str) -> None:
        durations = [(r.times()[-1] - r.times()[0]).total_seconds() for r in self.runs]
        stalls = sorted(s for s, _ in self.stalls().values() if s > 0)
        statuses = Counter(r.report.status.value for r in self.runs if r.report)
        print(
            f"{label}: {dict(statuses)}; run duration median "
            f"{statistics.median(durations):.1f}s, max {max(durations):.1f}s; longest stall "
            f"after the {'kill' if label == 'kill' else 'same point'}: median "
            f"{statistics.median(stalls):.1f}s, max {stalls[-1]:.1f}s"
        )


def summarize(baseline: Batch, killed: Batch, victim: str) -> None:
    baseline.report("baseline")
    killed.report("kill")
    normal = statistics.median(s for s, _ in baseline.stalls().values() if s > 0)
    stalls = killed.stalls()
    delays = {w: max(0.0, s - normal) for w, (s, _) in stalls.items()}
    worst = max(delays, key=lambda w: delays[w])
    touched = {r.workflow_id: r.touched() for r in killed.runs if r.touched()}
    print(f"killed {victim}; runs whose history shows it: {len(touched)}")
    for kind, count in Counter(k for ks in touched.values() for k in ks).most_common():
        print(f"  {count} x {kind}")
    seconds, ended_by = stalls[worst]
    print(
        f"longest delay from the kill: {delays[worst]:.1f}s = {worst}'s stall {seconds:.1f}s "
        f"(ended by {ended_by}; {', '.join(touched.get(worst, [])) or 'nothing retried'}) "
        f"- the baseline's median stall {normal:.1f}s"
    )
    late = Counter(stalls[w][1] for w, d in delays.items() if d > 5)
    print(
        f"runs delayed > 5 s: {sum(d > 5 for d in delays.values())} (ended by "
        + (", ".join(f"{n} x {k}" for k, n in late.most_common()) or "-")
        + f"), > 15 s: {sum(d > 15 for d in delays.values())}"
    )


async def batch(
    client: Client,
    names: list[str],
    rate: float,
    kill_at: float,
    victim: subprocess.Popen[bytes] | None,
) -> Batch:
    """Start a run on each target, `rate` a second; when `kill_at` of them have started,
    SIGKILL `victim` (if any); wait for every run to end and read their histories."""
    started: list[str] = []
    starting = asyncio.create_task(start_runs(client, names, rate, started))
    await asyncio.sleep(kill_at * len(names) / rate)
    if victim is not None:
        victim.kill()
        victim.wait()
    moment = datetime.now(UTC)
    print(f"{'SIGKILL' if victim else 'no kill'} after {len(started)} runs started")
    await starting
    runs = await asyncio.wait_for(
        asyncio.gather(*(collect(client, w) for w in started)), timeout=900
    )
    return Batch(list(runs), moment)


async def main(runs: int, rate: float, kill_at: float, workers: int) -> None:
    names = {kind: [f"{kind}-{i}" for i in range(runs)] for kind in ("base", "kill")}
    with tempfile.TemporaryDirectory() as tmp, flag_app() as app:
        config = write_config(Path(tmp), app.url, names["base"] + names["kill"])
        os.environ.update({"REMEDIATE_CONFIG": str(config), **key_env()})
        async with await WorkflowEnvironment.start_local(
            data_converter=pydantic_data_converter,
            dev_server_existing_path=str(BIN / "temporal"),
            search_attributes=SEARCH_ATTRIBUTES,
        ) as env:
            client = env.client
            base = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
            process_env = base | {
                "PYTHONPATH": str(ROOT),
                "REMEDIATE_TASK_QUEUE": QUEUE,
                "REMEDIATE_LOG_FORMAT": "text",
                "TEMPORAL_ADDRESS": client.service_client.config.target_host,
                "TEMPORAL_NAMESPACE": client.namespace,
                "TEMPORAL_CONFIG_FILE": str(Path(tmp) / f"none-{uuid.uuid4().hex}.toml"),
            }
            processes = start_workers(workers, process_env, Path(tmp))
            try:
                await polling(client, workers)
                baseline = await batch(client, names["base"], rate, kill_at, None)
                victim = processes[0]
                identity = f"{victim.pid}@{os.uname().nodename}"
                killed = await batch(client, names["kill"], rate, kill_at, victim)
                summarize(baseline, killed, identity)
            finally:
                for process in processes:
                    if process.poll() is None:
                        process.terminate()
                        try:
                            process.wait(timeout=30)
                        except subprocess.TimeoutExpired:
                            process.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="runs in each batch")
    parser.add_argument("--rate", type=float, default=2.0, help="runs started a second")
    parser.add_argument("--kill-at", type=float, default=0.5, help="share of runs started")
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.rate, args.kill_at, args.workers))
