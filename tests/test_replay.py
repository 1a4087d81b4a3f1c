"""Replay recorded histories: a change that would break running workflows fails the build.

Re-record after an intentional, versioned change with
`RECORD_HISTORIES=1 pytest tests/test_pool_restart_postgres.py tests/test_read_only.py
tests/test_rollback.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workers.worker import WORKFLOWS
from workflows.names import RUNBOOK_WORKFLOW_TYPES

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_is_a_recorded_history_per_runbook() -> None:
    recorded = {
        WorkflowHistory.from_json(p.stem, p.read_text())
        .events[0]
        .workflow_execution_started_event_attributes.workflow_type.name
        for p in HISTORIES
    }
    assert recorded >= set(RUNBOOK_WORKFLOW_TYPES.values())


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
