"""Task queue, workflow names and search attribute keys: the one place they are defined."""

from __future__ import annotations

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

SEARCH_ATTRIBUTES = (SA_RUNBOOK, SA_TARGET, SA_STATUS, SA_REQUESTED_BY)


def workflow_id_for(runbook: str, target: str) -> str:
    """Deterministic per runbook and target, so a second start attaches instead of racing."""
    return f"{runbook}-{target}"
