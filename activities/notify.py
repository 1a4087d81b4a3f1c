"""Notifications: a structured log line always, and a generic webhook when configured."""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field
from temporalio import activity

from activities.config import load_config
from activities.secrets import resolve_secret

logger = logging.getLogger("remediation.notify")


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


@activity.defn
async def notify(note: Notification) -> NotifyResult:
    logger.info(json.dumps({"notification": note.model_dump(mode="json")}, sort_keys=True))
    config = load_config().notify
    if not config.webhook_url:
        return NotifyResult()
    headers = {}
    if config.webhook_token is not None:
        headers["Authorization"] = f"Bearer {resolve_secret(config.webhook_token)}"
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            config.webhook_url, json=note.model_dump(mode="json"), headers=headers
        )
    # A webhook outage must not hide the page: raise so Temporal retries it.
    response.raise_for_status()
    return NotifyResult(webhook_status=response.status_code)
