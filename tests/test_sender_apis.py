"""The senders' API clients against their fakes and the real Alertmanager: each error says
what to fix and is retried only when a retry can help; every write is idempotent.

PagerDuty's REST API v2 and Slack's Web API are the local fakes of infra/fakes/ (their
documented shapes, errors and rate limiting); Alertmanager is Debian's binary.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.testing import ActivityEnvironment

from activities.alertmanager.models import (
    CreateSilenceInput,
    ExpireSilenceInput,
    ExtendSilenceInput,
)
from activities.alertmanager.silences import (
    AlertmanagerError,
    create_silence,
    expire_silence,
    extend_silence,
)
from activities.config import ConfigError, parse_config
from activities.notify.models import SlackMessageRef
from activities.notify.slack_api import SlackApiError, post_message, update_message
from activities.pagerduty.incidents import PagerDutyApi, PagerDutyError, resolve_incident
from activities.pagerduty.models import ResolveIncidentInput
from activities.refs import SecretRef
from activities.senders_config import PagerDutyConfig, SlackAppConfig
from tests.senders import ONCALL, Senders, senders_fixture  # noqa: F401 - the fixture
from tests.support import write_config

pytestmark = pytest.mark.timeout(60)

TOKEN_ENV = "SENDER_API_TOKEN_TEST"
TOKEN = "tok-" + uuid.uuid4().hex
INCIDENT = "PAPI001"


@pytest.fixture
def token() -> Iterator[str]:
    os.environ[TOKEN_ENV] = TOKEN
    yield TOKEN


def pagerduty(senders: Senders, from_email: str = ONCALL) -> PagerDutyApi:
    return PagerDutyApi(
        PagerDutyConfig(
            token=SecretRef(env=TOKEN_ENV),
            from_email=from_email,
            api_url=senders.pagerduty,
        )
    )


async def pagerduty_scenario(senders: Senders, **extra: object) -> None:
    body = {"token": TOKEN, "users": [ONCALL], "incidents": {INCIDENT: "triggered"}, **extra}
    async with httpx.AsyncClient() as http:
        (await http.post(f"{senders.pagerduty}/_fake/scenario", json=body)).raise_for_status()


async def test_pagerduty_errors_say_what_to_fix(senders: Senders, token: str) -> None:
    await pagerduty_scenario(senders)
    with pytest.raises(PagerDutyError) as refused:
        await pagerduty(senders).add_note("PNOPE00", "hello", "key-1")
    assert refused.value.non_retryable and refused.value.status == 404
    assert "check the ids" in str(refused.value)

    with pytest.raises(PagerDutyError) as no_user:
        await pagerduty(senders, from_email="nobody@example.com").add_note(INCIDENT, "x", "k")
    assert no_user.value.non_retryable and no_user.value.status == 400
    assert "from_email is the email of a valid PagerDuty user" in str(no_user.value)

    os.environ[TOKEN_ENV] = "wrong-" + TOKEN
    with pytest.raises(PagerDutyError) as unauthorized:
        await pagerduty(senders).status(INCIDENT)
    assert unauthorized.value.non_retryable and unauthorized.value.status == 401
    assert "[pagerduty]" in str(unauthorized.value)
    assert TOKEN not in str(unauthorized.value)


async def test_pagerduty_rate_limit_is_retried_after_its_reset(
    senders: Senders, token: str
) -> None:
    await pagerduty_scenario(senders, rate_limit_next=1, rate_limit_reset_seconds=3)
    with pytest.raises(PagerDutyError) as limited:
        await pagerduty(senders).status(INCIDENT)
    assert not limited.value.non_retryable
    assert limited.value.next_retry_delay == timedelta(seconds=3)
    assert await pagerduty(senders).status(INCIDENT) == "triggered"


async def test_a_pagerduty_note_is_added_once_per_key(senders: Senders, token: str) -> None:
    await pagerduty_scenario(senders)
    api = pagerduty(senders)
    first = await api.add_note(INCIDENT, "gate opened", "remediation-engine run/1/5")
    again = await api.add_note(INCIDENT, "gate opened", "remediation-engine run/1/5")
    other = await api.add_note(INCIDENT, "gate opened", "remediation-engine run/1/6")
    assert first == again != other


async def test_resolving_a_resolved_incident_changes_nothing(
    senders: Senders, token: str, tmp_path: Path
) -> None:
    await pagerduty_scenario(senders)
    write_config(
        tmp_path,
        f'[pagerduty]\ntoken = {{ env = "{TOKEN_ENV}" }}\nfrom_email = "{ONCALL}"\n'
        f'api_url = "{senders.pagerduty}"\n',
    )
    params = ResolveIncidentInput(incident_id=INCIDENT, workflow_id="wf", summary="remediated")
    first = await ActivityEnvironment().run(resolve_incident, params)
    second = await ActivityEnvironment().run(resolve_incident, params)
    assert (first.resolved, second.resolved, second.already_resolved) == (True, False, True)


def slack(senders: Senders, channel: str = "C0API") -> SlackAppConfig:
    return SlackAppConfig(
        token=SecretRef(env=TOKEN_ENV),
        channel=channel,
        api_url=f"{senders.slack}/api",
    )


async def slack_scenario(senders: Senders, **extra: object) -> None:
    body = {"token": TOKEN, "channels": ["C0API"], **extra}
    async with httpx.AsyncClient() as http:
        (await http.post(f"{senders.slack}/_fake/scenario", json=body)).raise_for_status()


async def test_slack_errors_say_what_to_fix(senders: Senders, token: str) -> None:
    await slack_scenario(senders, rate_limit_next=1)
    with pytest.raises(SlackApiError) as limited:
        await post_message(slack(senders), {"text": "hi"})
    assert not limited.value.non_retryable and limited.value.status == 429

    with pytest.raises(SlackApiError) as no_channel:
        await post_message(slack(senders, channel="C0GONE"), {"text": "hi"})
    assert no_channel.value.non_retryable
    assert "channel_not_found" in str(no_channel.value) and "C... id" in str(no_channel.value)

    with pytest.raises(SlackApiError) as gone:
        await update_message(slack(senders), SlackMessageRef(channel="C0API", ts="1.2"), {})
    assert gone.value.non_retryable and "message_not_found" in str(gone.value)

    os.environ[TOKEN_ENV] = "xoxb-wrong"
    with pytest.raises(SlackApiError) as unauthorized:
        await post_message(slack(senders), {"text": "hi"})
    assert unauthorized.value.non_retryable
    assert "invalid_auth" in str(unauthorized.value) and "[notify.slack_app]" in str(
        unauthorized.value
    )


def silence_input(labels: dict[str, str]) -> CreateSilenceInput:
    return CreateSilenceInput(
        workflow_id="pool_restart-orders-db", run_id=uuid.uuid4().hex, runbook="pool_restart",
        labels=labels,
    )  # fmt: skip


async def test_creating_and_expiring_a_silence_twice_acts_once(
    senders: Senders, tmp_path: Path
) -> None:
    write_config(tmp_path, f'[silences]\nalertmanager_url = "{senders.alertmanager}"\n')
    params = silence_input({"alertname": "PostgresConnectionsSaturated", "instance": "db-1"})
    first = await create_silence(params)
    retried = await create_silence(params)
    assert first.silence_id is not None and not first.already_existed
    assert retried.silence_id == first.silence_id and retried.already_existed
    async with httpx.AsyncClient() as http:
        listed = (await http.get(f"{senders.alertmanager}/api/v2/silences")).json()
    assert sum(params.run_id in s["comment"] for s in listed) == 1

    expired = await expire_silence(ExpireSilenceInput(silence_id=first.silence_id))
    again = await expire_silence(ExpireSilenceInput(silence_id=first.silence_id))
    assert (expired.expired, again.expired, again.already_over) == (True, False, True)

    with pytest.raises(AlertmanagerError) as empty:
        await create_silence(silence_input({}))
    assert empty.value.non_retryable and "no labels" in str(empty.value)


async def test_extending_a_silence_keeps_it_and_moves_its_end_but_not_once_it_is_over(
    senders: Senders, tmp_path: Path
) -> None:
    config = f'[silences]\nalertmanager_url = "{senders.alertmanager}"\nends_after = 60\n'
    write_config(tmp_path, config)
    params = silence_input({"alertname": "PostgresConnectionsSaturated", "instance": "db-2"})
    made = await create_silence(params)
    assert made.silence_id is not None and made.ends_after_seconds == 60
    url = f"{senders.alertmanager}/api/v2/silence/{made.silence_id}"
    async with httpx.AsyncClient() as http:
        before = (await http.get(url)).json()
        write_config(tmp_path, config.replace("ends_after = 60", "ends_after = 600"))
        extended = await extend_silence(ExtendSilenceInput(silence_id=made.silence_id))
        after = (await http.get(url)).json()
    assert extended.silence_id == made.silence_id, "updated in place, the same silence"
    assert after["status"]["state"] == "active"
    ends = [datetime.fromisoformat(x["endsAt"].replace("Z", "+00:00")) for x in (before, after)]
    assert ends[1] - ends[0] > timedelta(seconds=500)
    assert (after["matchers"], after["comment"]) == (before["matchers"], before["comment"])

    await expire_silence(ExpireSilenceInput(silence_id=made.silence_id))  # a person's expiry
    over = await extend_silence(ExtendSilenceInput(silence_id=made.silence_id))
    assert over.configured and over.silence_id is None


def test_config_refuses_two_slack_channels_and_a_bad_from_email() -> None:
    slack_both = """
[notify]
slack_webhook = { env = "SLACK_WEBHOOK" }
[notify.slack_app]
token = { env = "SLACK_BOT_TOKEN" }
channel = "C0123"
"""
    with pytest.raises(ConfigError, match="keep one"):
        parse_config(slack_both)
    with pytest.raises(ConfigError, match="from_email"):
        parse_config('[pagerduty]\ntoken = { env = "PD" }\nfrom_email = "oncall"\n')
    config = parse_config("")
    assert (config.pagerduty, config.silences, config.notify.slack_app) == (None, None, None)
