"""What a notification carries (never a secret value) and what sending it did."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Notification(BaseModel):
    event: str
    severity: Literal["info", "warning", "page"] = "info"
    workflow_id: str
    runbook: str
    target: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class NotifyResult(BaseModel):
    logged: bool = True
    webhook_status: int | None = None
    slack_status: int | None = None
