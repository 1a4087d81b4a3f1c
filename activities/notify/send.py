"""Notifications: a structured log line always; Slack (an incoming webhook, or a Slack app
that threads a run's progress under its gate message), a note on the run's PagerDuty
incident and a generic webhook when configured.

One activity sends to every channel, so a retry must not send twice to a channel that
already has it: what was sent is recorded on the server (`heartbeats.record`) after each
non-idempotent send, and a retry starts from there. PagerDuty notes are idempotent by
themselves (their key); the generic webhook goes last and may repeat (its receiver dedups by
the notification's content).
"""

from __future__ import annotations

import json
import logging

import httpx
from temporalio import activity

from activities import heartbeats
from activities.config import EngineConfig, load_config
from activities.links import gate_page_url, run_page_url
from activities.notify.models import Notification, NotifyResult, SlackMessageRef
from activities.notify.slack import decided_message, gate_message, line_message, post_message
from activities.notify.slack_api import post_message as post_app_message
from activities.notify.slack_api import update_message
from activities.pagerduty.incidents import PagerDutyApi, note_key
from activities.secrets.references import resolve_secret

logger = logging.getLogger("remediation.notify")

# What becomes a note on the run's PagerDuty incident: the steps a responder follows there.
PAGERDUTY_NOTE_EVENTS = frozenset(
    {
        "gate_opened",
        "gate_decided",
        "acted",
        "verification_passed",
        "verification_failed",
        "escalation",
    }
)


@activity.defn
@heartbeats.records_details  # what a retry must not send again (see the module's docstring)
async def notify(note: Notification) -> NotifyResult:
    engine = load_config()
    note = note.model_copy(update={"page_url": page_for(engine, note)})
    logger.info(json.dumps({"notification": note.model_dump(mode="json")}, sort_keys=True))
    config = engine.notify
    result = _sent_before()
    # Only a channel after Slack can fail the attempt that already posted to Slack.
    more = bool(config.webhook_url) or _pagerduty_note_wanted(engine, note)
    if config.slack_app is not None and result.slack_message is None:
        result.slack_message = await _slack_app(engine, note)
        await _remember(result, more)
    elif config.slack_webhook is not None and result.slack_status is None:
        result.slack_status = await post_message(
            resolve_secret(config.slack_webhook), _slack_body(note)
        )
        await _remember(result, more)
    if _pagerduty_note_wanted(engine, note) and result.pagerduty_note is None:
        assert engine.pagerduty is not None and note.pagerduty_incident is not None
        result.pagerduty_note = await PagerDutyApi(engine.pagerduty).add_note(
            note.pagerduty_incident, _pagerduty_content(engine, note), note_key(note.workflow_id)
        )
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


def page_for(engine: EngineConfig, note: Notification) -> str | None:
    """A gate that opens links to its page (to decide); everything else to the run's page."""
    page = gate_page_url if note.event == "gate_opened" else run_page_url
    return page(engine, note.workflow_id)


def _sent_before() -> NotifyResult:
    """What an earlier attempt of this notification already sent (nothing on the first)."""
    details = activity.info().heartbeat_details
    if not details:
        return NotifyResult()
    return NotifyResult.model_validate(details[0])


async def _remember(result: NotifyResult, more: bool) -> None:
    if more:
        await heartbeats.record(result.model_dump(mode="json"))


def _slack_body(note: Notification) -> dict[str, object]:
    if note.event == "gate_opened":
        return gate_message(
            note.workflow_id, note.runbook, note.target, note.message, note.details, note.page_url
        )
    return line_message(note.severity, note.workflow_id, note.message, note.page_url)


async def _slack_app(engine: EngineConfig, note: Notification) -> SlackMessageRef:
    """A decided gate's message is updated in place; everything else is posted, in the run's
    thread once it has one (a later gate is also shown in the channel)."""
    config = engine.notify.slack_app
    assert config is not None
    if note.event == "gate_decided" and note.slack_gate_message is not None:
        body = decided_message(
            note.workflow_id, note.runbook, note.target, note.message, note.details
        )
        return await update_message(config, note.slack_gate_message, body)
    return await post_app_message(
        config,
        _slack_body(note),
        thread=note.slack_thread,
        broadcast=note.event == "gate_opened",
    )


def _pagerduty_note_wanted(engine: EngineConfig, note: Notification) -> bool:
    return (
        engine.pagerduty is not None
        and note.pagerduty_incident is not None
        and note.event in PAGERDUTY_NOTE_EVENTS
    )


def _pagerduty_content(engine: EngineConfig, note: Notification) -> str:
    """The note: what happened, and where to read or decide more."""
    gate = note.event == "gate_opened"
    link = page_for(engine, note)
    if link is not None:
        where = f"\n{'Approve or reject' if gate else 'The run'}: {link}"
    elif gate:
        where = f"\nApprove with `remediate approve {note.workflow_id}`"
    else:
        where = f"\nThe run: `remediate status {note.workflow_id}`"
    return f"Remediation {note.runbook} on {note.target}: {note.message}{where}"
