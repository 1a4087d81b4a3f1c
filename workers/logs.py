"""How the worker and the service log: one JSON object per line (the default, for a log
pipeline), or plain text for a terminal (REMEDIATE_LOG_FORMAT=text; the local stack uses it).

In JSON, every line logged inside a run carries the run's ids as fields of their own:
`workflow_id`, `run_id` and `workflow_type` (from Temporal's workflow and activity loggers,
which otherwise append them to the message), plus `activity_type`, `activity_id` and
`attempt` inside an activity. Lines of the service name a run the same way
(`extra={"workflow_id": ...}`), so one query finds everything about a run.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any, Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["json", "text"]
TEXT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# Temporal's logger details -> our field names (a workflow's run id and an activity's
# workflow run id are the same thing to someone searching logs).
_WORKFLOW_FIELDS = {
    "workflow_id": "workflow_id",
    "run_id": "run_id",
    "workflow_type": "workflow_type",
    "task_queue": "task_queue",
    "attempt": "attempt",
}
_ACTIVITY_FIELDS = {
    "workflow_id": "workflow_id",
    "workflow_run_id": "run_id",
    "workflow_type": "workflow_type",
    "activity_id": "activity_id",
    "activity_type": "activity_type",
    "task_queue": "task_queue",
    "attempt": "attempt",
}

_CONTEXTS = (("temporal_workflow", _WORKFLOW_FIELDS), ("temporal_activity", _ACTIVITY_FIELDS))


class RunFieldsFormatter(JsonFormatter):
    """JSON lines with Temporal's run context lifted to top-level fields."""

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        for key, names in _CONTEXTS:
            details = log_data.pop(key, None)
            if isinstance(details, dict):
                for theirs, ours in names.items():
                    if theirs in details:
                        log_data.setdefault(ours, details[theirs])


def configure(fmt: LogFormat, level: int = logging.INFO, stream: IO[str] | None = None) -> None:
    """Set up the root logger (and uvicorn's) for this process, writing to `stream`
    (standard error by default)."""
    from temporalio import activity, workflow  # here: the CLI imports this module's types

    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            RunFieldsFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
        # The ids go into fields of their own rather than the end of the message.
        workflow.logger.workflow_info_on_message = False
        activity.logger.activity_info_on_message = False
    else:
        handler.setFormatter(logging.Formatter(TEXT))
        workflow.logger.workflow_info_on_message = True
        activity.logger.activity_info_on_message = True
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers[:] = []
        uvicorn_logger.propagate = True
