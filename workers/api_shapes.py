"""What the approval service and its clients (the CLI) both speak: the page header, the
start's answer and the decision errors. Light on purpose: the CLI imports it on every
command."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

if TYPE_CHECKING:
    from temporalio.client import WorkflowExecutionStatus

# `GET /approvals` pages: the token of the next page, when there is one.
NEXT_PAGE_HEADER = "Next-Page-Token"


class StartResult(BaseModel):
    workflow_id: str
    run_id: str
    # False: a run of this runbook on this target was already going; this is it.
    started: bool
    requested_by: str


class DecisionError(Exception):
    """A decision that could not be applied; `status` is the HTTP status that fits."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RunEndedError(DecisionError):
    """The run has finished: no gate will open on it again."""

    def __init__(self, workflow_id: str, status: WorkflowExecutionStatus | None) -> None:
        how = status.name.lower() if status else "ended"
        super().__init__(f"{workflow_id} has ended ({how}), no gate will open on it", 409)

    @classmethod
    def from_message(cls, message: str) -> RunEndedError:
        """The same error, as the approval service reported it over HTTP."""
        err = cls.__new__(cls)
        DecisionError.__init__(err, message, 409)
        return err
