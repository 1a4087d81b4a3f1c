"""Slack messages for the engine's notifications: a gate becomes a message with the plan and
Approve / Reject buttons (Block Kit); everything else a plain line."""

from __future__ import annotations

import json
from typing import Any

import httpx

SEVERITY_ICON = {"info": ":large_blue_circle:", "warning": ":warning:", "page": ":rotating_light:"}


def button_value(workflow_id: str, plan_id: str, kind: str) -> str:
    """What a button carries back: the run, the exact plan shown, and the decision."""
    return json.dumps({"workflow_id": workflow_id, "plan_id": plan_id, "kind": kind})


def gate_message(
    workflow_id: str,
    runbook: str,
    target: str,
    message: str,
    details: dict[str, Any],
    page_url: str | None = None,
) -> dict[str, Any]:
    """The gate's message: the plan, its effects, Approve and Reject (decided by the Slack
    member's identity), and, with `page_url`, a button opening the gate's page, where the
    evidence and the timeline are."""
    plan_id = str(details.get("plan_id", ""))
    header = f"*{runbook}* on *{target}* needs approval"
    context = (
        f"plan `{plan_id}` · requested by {details.get('requested_by', '?')} · `{workflow_id}`"
    )
    effects = "".join(f"\n• {e}" for e in details.get("effects") or [])
    return {
        "text": f"{header}: {message}",
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"{header}\n{message}{effects}"},
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
            {
                "type": "actions",
                "block_id": f"gate:{plan_id}",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "approve",
                        "style": "primary",
                        "text": {"type": "plain_text", "text": "Approve"},
                        "value": button_value(workflow_id, plan_id, "approve"),
                    },
                    {
                        "type": "button",
                        "action_id": "reject",
                        "style": "danger",
                        "text": {"type": "plain_text", "text": "Reject"},
                        "value": button_value(workflow_id, plan_id, "reject"),
                    },
                    *(
                        [
                            {
                                "type": "button",
                                "action_id": "open_page",
                                "text": {"type": "plain_text", "text": "Open the gate's page"},
                                "url": page_url,
                            }
                        ]
                        if page_url
                        else []
                    ),
                ],
            },
        ],
    }


def line_message(
    severity: str, workflow_id: str, message: str, page_url: str | None = None
) -> dict[str, Any]:
    icon = SEVERITY_ICON.get(severity, "")
    run = f"<{page_url}|{workflow_id}>" if page_url else f"`{workflow_id}`"
    return {"text": f"{icon} {message} ({run})".strip()}


async def post_message(webhook_url: str, body: dict[str, Any]) -> int:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(webhook_url, json=body)
    response.raise_for_status()
    return response.status_code


DECIDED_ICON = {
    "approved": ":white_check_mark:",
    "rejected": ":no_entry_sign:",
    "timed_out": ":hourglass:",
    "resolved": ":large_green_circle:",
    "superseded": ":arrows_counterclockwise:",
}


def decided_message(
    workflow_id: str, runbook: str, target: str, message: str, details: dict[str, Any]
) -> dict[str, Any]:
    """A gate message once its gate closed: what was decided, by whom, and no buttons left to
    press (chat.update replaces the blocks, so the actions block goes)."""
    outcome = str(details.get("outcome", ""))
    icon = DECIDED_ICON.get(outcome, ":grey_question:")
    header = f"*{runbook}* on *{target}*: {icon} {message}"
    plan = str(details.get("plan", ""))
    context = f"plan `{details.get('plan_id', '')}` · `{workflow_id}`"
    return {
        "text": f"{runbook} on {target}: {message}",
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": header + (f"\n{plan}" if plan else "")},
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }
