"""Every notification links to the page a person acts from: the gate's page while a gate
opens, the run's page after; through the generic webhook (a real HTTP receiver) and in the
Slack message bodies. Without `[pages] public_url` there is no link, and the text says how to
decide from the CLI instead."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.notify.models import Notification
from activities.notify.send import notify
from activities.notify.slack import gate_message, line_message
from tests.support import webhook_receiver, write_config

PAGES = "https://remediate.example.com"


def note(event: str) -> Notification:
    return Notification(
        event=event,
        workflow_id="pool_restart-orders-db",
        runbook="pool_restart",
        target="orders-db",
        message="approval needed" if event == "gate_opened" else "remediated",
        details={"plan_id": "0123456789abcdef"},
    )


@pytest.mark.parametrize(
    ("event", "page"),
    [
        ("gate_opened", "/ui/gates/pool_restart-orders-db"),
        ("finished", "/ui/runs/pool_restart-orders-db"),
    ],
)
async def test_the_generic_webhook_carries_the_page_to_open(
    tmp_path: Path, event: str, page: str
) -> None:
    with webhook_receiver() as receiver:
        url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        write_config(
            tmp_path, f'[notify]\nwebhook_url = "{url}"\n[pages]\npublic_url = "{PAGES}"\n'
        )
        await ActivityEnvironment().run(notify, note(event))
        write_config(tmp_path, f'[notify]\nwebhook_url = "{url}"\n')
        await ActivityEnvironment().run(notify, note(event))
    with_pages, without = receiver.received
    assert with_pages["page_url"] == PAGES + page
    assert without["page_url"] is None


def test_slack_messages_link_to_the_pages() -> None:
    gate = gate_message(
        "pool_restart-orders-db", "pool_restart", "orders-db", "approval needed",
        {"plan_id": "0123456789abcdef"}, f"{PAGES}/ui/gates/pool_restart-orders-db",
    )  # fmt: skip
    [actions] = [b for b in gate["blocks"] if b["type"] == "actions"]
    link = [e for e in actions["elements"] if e["action_id"] == "open_page"]
    assert [e["url"] for e in link] == [f"{PAGES}/ui/gates/pool_restart-orders-db"]
    plain = gate_message("w", "pool_restart", "orders-db", "m", {"plan_id": "p"})
    [actions] = [b for b in plain["blocks"] if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == ["approve", "reject"]
    line = line_message("info", "pool_restart-orders-db", "remediated", f"{PAGES}/ui/runs/x")
    assert f"<{PAGES}/ui/runs/x|pool_restart-orders-db>" in line["text"]
