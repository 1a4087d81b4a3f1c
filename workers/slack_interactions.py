"""Approve / Reject buttons clicked in Slack.

Slack signs each interaction request (`v0=` HMAC-SHA256 of `v0:{timestamp}:{body}` with the
app's signing secret); the clicking member is mapped to a configured identity
(`slack_user_id`), and the button names the exact plan it showed. The decision then goes the
same way as every other: signed by the approval service, checked by the gate. The outcome
replaces the message (no buttons left to click twice); a refusal (stale button, not an
approver, already decided) is shown to the clicker only.
"""

from __future__ import annotations

import logging
from typing import Any, Literal
from urllib.parse import parse_qs

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError
from temporalio.client import Client

from activities.config import EngineConfig
from workers.approvals import DecisionError, decide_as

logger = logging.getLogger("remediation.slack")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SlackUser(_Lenient):
    id: str
    username: str = ""


class SlackAction(_Lenient):
    action_id: str
    value: str = ""


class BlockActions(_Lenient):
    type: str
    user: SlackUser
    actions: list[SlackAction]
    response_url: str


class ButtonValue(BaseModel):
    workflow_id: str
    plan_id: str
    kind: Literal["approve", "reject"]


class InteractionError(Exception):
    pass


# The gate message's link button: Slack opens the page and tells us of the click, which
# decides nothing (answered 200, ignored).
OPEN_PAGE = "open_page"


def parse_interaction(body: bytes) -> tuple[BlockActions, ButtonValue | None]:
    """The click and its decision button's value; None for the link to the gate's page."""
    try:
        form = parse_qs(body.decode(), strict_parsing=True)
        interaction = BlockActions.model_validate_json(form["payload"][0])
        action = interaction.actions[0]
        if interaction.type == "block_actions" and action.action_id == OPEN_PAGE:
            return interaction, None
        value = ButtonValue.model_validate_json(action.value)
    except ValidationError as err:  # its text repeats the input: name the fields only
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in err.errors()
        )
        raise InteractionError(f"not a Slack block_actions interaction: {problems}") from None
    except (UnicodeDecodeError, ValueError, KeyError, IndexError) as err:
        raise InteractionError(f"not a Slack block_actions interaction: {err}") from None
    if interaction.type != "block_actions" or value.kind != action.action_id:
        raise InteractionError("not an approval button of this engine")
    return interaction, value


def identity_for(config: EngineConfig, slack_user_id: str) -> str | None:
    for name, identity in config.identities.items():
        if identity.slack_user_id == slack_user_id:
            return name
    return None


async def handle_click(
    client: Client, config: EngineConfig, interaction: BlockActions, value: ButtonValue
) -> None:
    """Runs after Slack has had its 200 (it wants one within 3 seconds)."""
    approver = identity_for(config, interaction.user.id)
    if approver is None:
        message = (
            f"Slack user {interaction.user.id} is not a configured approver; "
            "ask an admin to add `slack_user_id` to your identity"
        )
        await _respond(interaction, message, False)
        return
    try:
        decision = await decide_as(
            client,
            config,
            approver,
            value.workflow_id,
            value.kind,
            reason="via Slack",
            plan_id=value.plan_id,
        )
    except DecisionError as err:
        await _respond(interaction, f":no_entry: not applied: {err}", False)
        return
    await _respond(
        interaction,
        f":white_check_mark: plan `{decision.plan_id}` of `{value.workflow_id}` "
        f"{decision.outcome.value} by {decision.decided_by}",
        True,
    )


async def _respond(interaction: BlockActions, text: str, replace: bool) -> None:
    body: dict[str, Any] = {"text": text, "replace_original": replace}
    if not replace:
        body["response_type"] = "ephemeral"
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            await http.post(interaction.response_url, json=body)
    except httpx.HTTPError as err:
        logger.warning("could not answer Slack at response_url: %s", type(err).__name__)
