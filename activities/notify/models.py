"""What a notification carries (never a secret value) and what sending it did."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class SlackMessageRef(BaseModel):
    """A message the Slack app posted: its channel id and `ts`, which chat.update needs to
    change it and chat.postMessage (as `thread_ts`) to reply in its thread."""

    channel: str
    ts: str


class Notification(BaseModel):
    event: str
    severity: Literal["info", "warning", "page"] = "info"
    workflow_id: str
    runbook: str
    target: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    # Where the run's conversation already is (kept by the workflow, see
    # workflows/sender_loop.py): the PagerDuty incident that started the run, the thread of
    # the run's first gate message, and (for `gate_decided`) the decided gate's own message.
    pagerduty_incident: str | None = None
    slack_thread: SlackMessageRef | None = None
    slack_gate_message: SlackMessageRef | None = None
    # The page a person opens from this notification (the gate's, while one is open; else
    # the run's), set by the notify activity from `[pages] public_url`; None without it.
    page_url: str | None = None


class NotifyResult(BaseModel):
    logged: bool = True
    webhook_status: int | None = None
    slack_status: int | None = None
    # The message the Slack app posted or updated (None through an incoming webhook).
    slack_message: SlackMessageRef | None = None
    # The note added to the run's PagerDuty incident (its id), if one was.
    pagerduty_note: str | None = None
