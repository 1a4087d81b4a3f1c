"""The verification loop on a real server: a check slower than the heartbeat timeout does not
time the verification out (issue 13, scenario 8: all checks ran between heartbeats), and a
check slower than the verification's deadline is cut short there."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.checks import (
    MIN_CHECK_SECONDS,
    CheckSpec,
    VerifyInput,
    VerifyResult,
    verify_until_stable,
)
from infra.local_postgres import free_port
from tests.one_attempt import OneAttemptInput, OneAttemptWorkflow
from tests.support import write_config
from workers.worker import WORKFLOW_RUNNER


class SlowServer(ThreadingHTTPServer):
    answer_after: float


class _SlowHandler(BaseHTTPRequestHandler):
    server: SlowServer

    def do_GET(self) -> None:
        time.sleep(self.server.answer_after)
        body = b'{"read_only": false}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def slow_server(answer_after: float) -> Iterator[str]:
    """A real HTTP server that answers every GET with 200, but only after `answer_after`."""
    server = SlowServer(("127.0.0.1", free_port()), _SlowHandler)
    server.answer_after = answer_after
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/health"
    finally:
        server.shutdown()


def one_worker(env: WorkflowEnvironment, queue: str) -> Worker:
    return Worker(
        env.client,
        task_queue=queue,
        workflows=[OneAttemptWorkflow],
        activities=[verify_until_stable],
        workflow_runner=WORKFLOW_RUNNER,
    )


async def verify_once(env: WorkflowEnvironment, params: VerifyInput) -> tuple[VerifyResult, Any]:
    """Run the verification with a one-second heartbeat timeout and one attempt; its result
    and the attempts the server started."""
    queue = f"verify-{uuid.uuid4().hex[:6]}"
    async with one_worker(env, queue):
        handle = await env.client.start_workflow(
            OneAttemptWorkflow.run,
            OneAttemptInput(
                activity="verify_until_stable",
                argument=params.model_dump(),
                heartbeat_timeout_seconds=1.0,
            ),
            id=f"verify-{uuid.uuid4().hex[:6]}",
            task_queue=queue,
        )
        result = VerifyResult.model_validate(await handle.result())
    history = await handle.fetch_history()
    started = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    return result, started


async def test_a_check_slower_than_the_heartbeat_timeout_does_not_time_verification_out(
    dev_env: WorkflowEnvironment,
) -> None:
    with slow_server(answer_after=2.0) as url:
        # Each poll runs two checks of two seconds: 4 s between the polls' heartbeats, four
        # times the heartbeat timeout.
        checks = [CheckSpec(kind="url_healthy", target="web", url=url)] * 2
        params = VerifyInput(
            checks=checks, required_consecutive=2, interval_seconds=0.2, deadline_seconds=60
        )
        result, started = await verify_once(dev_env, params)
    assert result.passed, result.last
    assert result.attempts == 2
    assert [o.observed for o in result.last] == ["200", "200"]
    assert started == [1], "one attempt, never timed out"


async def test_a_check_that_outlasts_the_deadline_is_a_failed_observation(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    with slow_server(answer_after=12.0) as url:
        # The app flag's own timeout (30 s) is far longer than the verification's deadline.
        write_config(
            tmp_path,
            f'[targets.web]\nkind = "http"\napp_flag = {{ url = "{url}", timeout_seconds = 30 }}\n',
        )
        check = CheckSpec(kind="writes_accepted", target="web", mode="app_flag")
        params = VerifyInput(
            checks=[check], required_consecutive=1, interval_seconds=0.2, deadline_seconds=1
        )
        started_at = time.monotonic()
        result, started = await verify_once(dev_env, params)
        elapsed = time.monotonic() - started_at
    assert not result.passed
    assert result.attempts == 1
    assert result.last[0].observed == f"no answer within {MIN_CHECK_SECONDS:.0f}s"
    assert elapsed < 12.0, "cut short, not waited out"
    assert started == [1], "one attempt, never timed out"
