"""Slack's interactivity Request URL, POST /slack/interactions: the Approve / Reject buttons
of gate messages. The request is authenticated like a signed webhook (Slack's v0 signature
over `v0:{timestamp}:{body}`), then answered at once with 200 while the click is handled in
the background (`workers.slack_interactions`), as Slack wants an answer within 3 seconds."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Header, Request
from fastapi.responses import Response

from activities.config import load_config
from workers.http_common import WEBHOOK_RESPONSES, check_hmac, read_body, refuse, temporal_client
from workers.slack_interactions import InteractionError, handle_click, parse_interaction
from workers.webhook_auth import versioned_signatures

router = APIRouter()


@router.post("/slack/interactions", responses=WEBHOOK_RESPONSES)
async def slack_interactions(
    request: Request,
    background: BackgroundTasks,
    signature: Annotated[str, Header(alias="X-Slack-Signature")] = "",
    timestamp: Annotated[str, Header(alias="X-Slack-Request-Timestamp")] = "",
) -> Response:
    """Slack's interactivity Request URL: the Approve / Reject buttons of gate messages."""
    config = load_config()
    body = await read_body(request, "slack")
    signed = f"v0:{timestamp}:".encode() + body
    signatures = versioned_signatures(signature, "v0")
    check_hmac("slack", config.intake.slack_signing_secrets, signed, signatures, timestamp)
    try:
        interaction, value = parse_interaction(body)
    except InteractionError as err:
        raise refuse("slack", "malformed", 422, str(err)) from None
    if value is None:  # the link to the gate's page: the browser opened it
        return Response(status_code=200)
    background.add_task(handle_click, temporal_client(request), config, interaction, value)
    return Response(status_code=200)
