"""JSON logs as a log pipeline reads them: every line an object, and a run's lines (its audit
steps, logged by the workflow; its activities' lines) carry the run's ids as fields, so one
query on `workflow_id` finds them; the ids are not repeated at the end of the message."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from tests.fake_system import CONFIG, FakeSystem, running
from tests.support import start_signed, write_config
from workers import logs
from workflows.models import RunbookInput, RunStatus
from workflows.pool_restart import PoolRestartWorkflow


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    logs.configure("json", stream=out)
    yield out
    logs.configure("text")
    root.handlers[:], root.level = handlers, level


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_a_runs_lines_carry_its_ids(
    dev_env: WorkflowEnvironment, tmp_path: Path, json_logs: io.StringIO
) -> None:
    write_config(tmp_path, CONFIG.format(auto=""))
    system = FakeSystem()
    async with running(dev_env, system) as queue:
        handle = await start_signed(
            dev_env.client,
            PoolRestartWorkflow.run,
            RunbookInput(target="orders-db", requested_by="alice", dry_run=True),
            id=f"logs-{uuid.uuid4().hex[:6]}",
            task_queue=queue,
        )
        assert (await handle.result()).status == RunStatus.DRY_RUN
    mine = [line for line in lines(json_logs) if line.get("workflow_id") == handle.id]
    started = [line for line in mine if line["message"].startswith("started: pool_restart")]
    assert len(started) == 1, mine
    [line] = started
    assert line["run_id"] == handle.result_run_id
    assert line["workflow_type"] == "PoolRestartWorkflow"
    assert line["level"] == "INFO" and line["logger"] and line["time"]
    assert "workflow_id" not in line["message"]  # in its field, not appended to the text
    assert any(line["message"].startswith("finished:") for line in mine)


async def test_an_activitys_lines_name_its_run_and_attempt(json_logs: io.StringIO) -> None:
    def work() -> None:
        activity.logger.info("terminated %d idle sessions", 3)

    ActivityEnvironment().run(work)
    [line] = [line for line in lines(json_logs) if "idle sessions" in line["message"]]
    assert line["message"] == "terminated 3 idle sessions"
    assert {"workflow_id", "run_id", "activity_id", "activity_type", "attempt"} <= line.keys()
