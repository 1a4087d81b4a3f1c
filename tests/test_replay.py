"""Replay recorded histories: a change that would break running workflows fails the build.

`tests/histories/*.json` are the current runbooks' recordings; the folders below it keep those
of earlier versions (`v1-hmac-decisions/`: decisions before they were signed tokens;
`v2-restore-snapshot-first/`: a restore that streamed its safety snapshot before the plan),
which must still replay through their `workflow.patched` branches. The replayer has the payload
codec on, as a worker configured with keys has: the plain recordings pass through it, and
`pool_restart_encrypted.json` (recorded by tests/test_encrypted_history.py, sealed under the
fixed test key `test-k1`) is opened by it. Re-record after an intentional,
versioned change with `RECORD_HISTORIES=1 pytest tests/test_pool_restart_postgres.py
tests/test_read_only.py tests/test_rollback.py tests/test_backup_restore.py
tests/test_key_rotation.py` (and move the old recordings into a folder first).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from tests.support import WORKFLOW_IDS, codec_converter
from workers.worker import WORKFLOW_RUNNER, WORKFLOWS
from workflows.names import RUNBOOK_WORKFLOW_TYPES

HISTORIES_DIR = Path(__file__).parent / "histories"
HISTORIES = sorted(p for p in HISTORIES_DIR.rglob("*.json") if p.name != WORKFLOW_IDS.name)
CURRENT = [p for p in HISTORIES if p.parent == HISTORIES_DIR]


def test_there_is_an_encrypted_recording() -> None:
    encrypted = (HISTORIES_DIR / "pool_restart_encrypted.json").read_text()
    assert '"YmluYXJ5L2VuY3J5cHRlZA=="' in encrypted  # base64 of binary/encrypted


def test_there_is_a_recorded_history_per_runbook() -> None:
    recorded = {
        WorkflowHistory.from_json(p.stem, p.read_text())
        .events[0]
        .workflow_execution_started_event_attributes.workflow_type.name
        for p in CURRENT
    }
    assert recorded >= set(RUNBOOK_WORKFLOW_TYPES.values())


@pytest.mark.parametrize(
    "path", HISTORIES, ids=[str(p.relative_to(p.parents[1])) for p in HISTORIES]
)
async def test_recorded_history_replays(path: Path) -> None:
    # Each folder's recordings come with the workflow ids they ran under, where it kept them.
    kept = path.parent / WORKFLOW_IDS.name
    ids = json.loads(kept.read_text()) if kept.exists() else {}
    # Signed decisions are bound to the workflow id: replay under the one the run had.
    history = WorkflowHistory.from_json(ids.get(path.stem, path.stem), path.read_text())
    replayer = Replayer(
        workflows=WORKFLOWS,
        data_converter=codec_converter("test-k1", "test-k2", encrypt_with="test-k2"),
        workflow_runner=WORKFLOW_RUNNER,
    )
    await replayer.replay_workflow(history)
