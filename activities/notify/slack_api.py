"""Slack's Web API with a Slack app's bot token: chat.postMessage and chat.update.

An incoming webhook answers "ok" and nothing else; the Web API answers with the message's
channel and `ts`, which is what updating a gate message in place and threading a run's
progress under it need. Slack answers HTTP 200 with `{"ok": false, "error": "..."}` for most
failures and HTTP 429 with `Retry-After` when rate-limited; both are mapped here once.
"""

from __future__ import annotations

from typing import Any

import httpx

from activities.http.errors import ProviderError, error_for_status, redact, unreachable
from activities.notify.models import SlackMessageRef
from activities.secrets.references import resolve_secret
from activities.senders_config import SlackAppConfig

CONFIG_HINT = "[notify.slack_app]"
# Slack's own trouble: worth another attempt.
RETRYABLE = {
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "ratelimited",
}
# What to fix, for the errors a configuration causes.
FIXES = {
    "invalid_auth": "the bot token is not valid: check the token reference in " + CONFIG_HINT,
    "not_authed": "no bot token was sent: check the token reference in " + CONFIG_HINT,
    "token_revoked": "the bot token was revoked: install the app again and update the secret",
    "account_inactive": "the app's bot user is deactivated: reinstall the app",
    "missing_scope": "the app lacks the chat:write scope: add it and reinstall the app",
    "channel_not_found": "the channel id in " + CONFIG_HINT + " is wrong (use the C... id)",
    "not_in_channel": "the app is not in the channel: invite it (/invite @app) first",
    "is_archived": "the channel is archived: name another channel in " + CONFIG_HINT,
    "message_not_found": "the gate message is gone (deleted in Slack); nothing to update",
    "cant_update_message": "the message was not posted by this app's bot token",
    "edit_window_closed": "the workspace no longer allows editing the message",
}


class SlackApiError(ProviderError):
    error_type = "SlackApiError"


async def call(config: SlackAppConfig, method: str, body: dict[str, Any]) -> dict[str, Any]:
    """One Web API method with a JSON body; its answer, or SlackApiError saying what to fix."""
    token = resolve_secret(config.token)
    try:
        async with httpx.AsyncClient(timeout=config.timeout_seconds) as client:
            response = await client.post(
                f"{config.api_url}/{method}",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
    except httpx.TransportError as exc:
        raise unreachable("Slack", method, exc, token, error=SlackApiError) from None
    if response.status_code != 200:
        raise error_for_status(
            "Slack",
            response.status_code,
            f"call {method}",
            redact(response.text, token),
            response.headers.get("Retry-After"),
            config_hint=CONFIG_HINT,
            error=SlackApiError,
        )
    data: dict[str, Any] = response.json()
    if data.get("ok") is not True:
        error = str(data.get("error", "unknown_error"))
        fix = FIXES.get(error, "see Slack's documentation of the error")
        raise SlackApiError(
            f"Slack refused {method} in channel {body.get('channel')}: {error}; {fix}",
            retryable=error in RETRYABLE,
        )
    return data


async def post_message(
    config: SlackAppConfig,
    body: dict[str, Any],
    thread: SlackMessageRef | None = None,
    broadcast: bool = False,
) -> SlackMessageRef:
    """Post `body` (text, blocks) to the configured channel, in `thread` if given; with
    `broadcast`, a thread reply is also shown in the channel (a later gate of the run)."""
    message: dict[str, Any] = {**body, "channel": config.channel}
    if thread is not None:
        message.update(channel=thread.channel, thread_ts=thread.ts)
        if broadcast:
            message["reply_broadcast"] = True
    data = await call(config, "chat.postMessage", message)
    return SlackMessageRef(channel=str(data["channel"]), ts=str(data["ts"]))


async def update_message(
    config: SlackAppConfig, message: SlackMessageRef, body: dict[str, Any]
) -> SlackMessageRef:
    """Replace the message's text and blocks (an empty `blocks` list removes them all)."""
    data = await call(config, "chat.update", {**body, "channel": message.channel, "ts": message.ts})
    return SlackMessageRef(channel=str(data["channel"]), ts=str(data["ts"]))
