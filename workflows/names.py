"""Task queue, workflow names and search attribute keys: the one place they are defined."""

from __future__ import annotations

from typing import Any

from temporalio.common import SearchAttributeKey

TASK_QUEUE = "remediation"

POOL_RESTART = "pool_restart"
READ_ONLY = "read_only"
ROLLBACK = "rollback"
BACKUP_RESTORE = "backup_restore"
KEY_ROTATION = "key_rotation"

RUNBOOK_WORKFLOW_TYPES = {
    POOL_RESTART: "PoolRestartWorkflow",
    READ_ONLY: "ReadOnlyWorkflow",
    ROLLBACK: "RollbackWorkflow",
    BACKUP_RESTORE: "BackupRestoreWorkflow",
    KEY_ROTATION: "KeyRotationWorkflow",
}

SA_RUNBOOK = SearchAttributeKey.for_keyword("RemediationRunbook")
SA_TARGET = SearchAttributeKey.for_keyword("RemediationTarget")
SA_STATUS = SearchAttributeKey.for_keyword("RemediationStatus")
SA_REQUESTED_BY = SearchAttributeKey.for_keyword("RemediationRequestedBy")
# Set while a gate is open, unset when it closes (workflows/gate_visibility.py), so listings
# and filters ("gates for my group", "gates aborting within 5 min") need no query per run.
# Plain text in the server's index: never a plan, a reason or anything secret.
SA_REQUIRED_GROUP = SearchAttributeKey.for_keyword("RemediationRequiredGroup")
SA_GATE_OPENED_AT = SearchAttributeKey.for_datetime("RemediationGateOpenedAt")
SA_GATE_DEADLINE = SearchAttributeKey.for_datetime("RemediationGateDeadline")

SEARCH_ATTRIBUTES = (
    SA_RUNBOOK,
    SA_TARGET,
    SA_STATUS,
    SA_REQUESTED_BY,
    SA_REQUIRED_GROUP,
    SA_GATE_OPENED_AT,
    SA_GATE_DEADLINE,
)
# The open gate's view (a GateView: plan, quorum so far, deadline), in the run's memo: read
# with the listing, through the data converter (so the payload codec seals it like the rest).
MEMO_GATE = "gate"


def search_attribute_type(key: SearchAttributeKey[Any]) -> str:
    """The type's name as `temporal operator search-attribute create --type` and the
    registration scripts spell it ("Keyword", "Datetime")."""
    return key.indexed_value_type.name.capitalize()  # KEYWORD -> Keyword


def workflow_id_for(runbook: str, target: str) -> str:
    """Deterministic per runbook and target, so a second start attaches instead of racing."""
    return f"{runbook}-{target}"
