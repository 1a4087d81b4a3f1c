"""Posting a run's incident record: the notification path every event takes (`notify`: the
log line, the webhook, Slack), with the link to the run's page added here, where the
service's public URL is known (`[pages] public_url`; the workflow does not read config)."""

from __future__ import annotations

from temporalio import activity

from activities import heartbeats
from activities.config import load_config
from activities.links import run_page_url
from activities.notify.models import Notification, NotifyResult
from activities.notify.send import notify


@activity.defn
@heartbeats.records_details  # it sends through `notify`, which records what it sent
async def post_incident_record(note: Notification) -> NotifyResult:
    link = run_page_url(load_config(), note.workflow_id)
    if link is not None:
        note = note.model_copy(
            update={
                "message": f"{note.message.rstrip()}\n\nRun page: {link}\n",
                "details": {**note.details, "run_page": link},
            }
        )
    return await notify(note)
