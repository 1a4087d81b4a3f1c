"""Notifications: a structured log line always, and a generic webhook when configured."""

from __future__ import annotations

import json
import logging

import httpx
from temporalio import activity

from activities.config import load_config
from activities.notify.models import Notification, NotifyResult
from activities.notify.slack import gate_message, line_message, post_message
from activities.secrets.references import resolve_secret

logger = logging.getLogger("remediation.notify")


@activity.defn
async def notify(note: Notification) -> NotifyResult:
    logger.info(json.dumps({"notification": note.model_dump(mode="json")}, sort_keys=True))
    config = load_config().notify
    result = NotifyResult()
    if config.slack_webhook is not None:
        body = (
            gate_message(note.workflow_id, note.runbook, note.target, note.message, note.details)
            if note.event == "gate_opened"
            else line_message(note.severity, note.workflow_id, note.message)
        )
        result.slack_status = await post_message(resolve_secret(config.slack_webhook), body)
    if not config.webhook_url:
        return result
    headers = {}
    if config.webhook_token is not None:
        headers["Authorization"] = f"Bearer {resolve_secret(config.webhook_token)}"
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            config.webhook_url, json=note.model_dump(mode="json"), headers=headers
        )
    # A webhook outage must not hide the page: raise so Temporal retries it.
    response.raise_for_status()
    result.webhook_status = response.status_code
    return result
