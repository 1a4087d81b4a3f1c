"""The audit trail: every step of a run, queryable while it runs and kept in the report."""

from __future__ import annotations

from typing import Any

from temporalio import workflow

from workflows.models import StepRecord


class AuditTrail:
    def __init__(self) -> None:
        self.steps: list[StepRecord] = []

    def record(self, kind: str, summary: str, actor: str = "engine", **details: Any) -> StepRecord:
        step = StepRecord(
            at=workflow.now(), kind=kind, summary=summary, actor=actor, details=details
        )
        self.steps.append(step)
        workflow.logger.info("%s: %s", kind, summary)
        return step
