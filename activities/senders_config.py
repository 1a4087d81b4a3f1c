"""The config sections that close the loop with the alert's senders: a Slack app (messages
updated in place and threaded), PagerDuty's REST API (notes, resolution) and Alertmanager's
API (silences while a run acts). Each is optional: absent, that loop stays open.

Their own module so that `activities/config.py` (the file's schema) and the code that uses
them share them without importing each other; credentials are references only.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from activities.refs import SecretRef, StrictModel


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http(s) URL (scheme://host[:port])")
    return value.rstrip("/")


class SlackAppConfig(StrictModel):
    """`[notify.slack_app]`: a Slack app's bot token (`chat:write`) and the channel id the
    engine posts to. Unlike an incoming webhook, the Web API answers with the message's
    channel and `ts`, so a gate message can be updated once decided (its buttons removed)
    and the run's later notifications go to its thread."""

    token: SecretRef
    # The channel's id (C...): chat.update takes ids only, not names.
    channel: str = Field(min_length=1)
    api_url: str = "https://slack.com/api"
    timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("api_url")
    @classmethod
    def _http(cls, value: str) -> str:
        return _http_url(value)


class PagerDutyConfig(StrictModel):
    """`[pagerduty]`: REST API v2 access for runs started from a PagerDuty incident: a note
    at each gate, decision, action and verification, and the incident resolved once the
    remediation is verified. `token` is a REST API key (not the webhook's signing secret);
    PagerDuty records notes and resolutions as the user whose email is `from_email`."""

    token: SecretRef
    from_email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    api_url: str = "https://api.pagerduty.com"
    # False: only notes; a person resolves the incident.
    resolve_when_verified: bool = True
    timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("api_url")
    @classmethod
    def _http(cls, value: str) -> str:
        return _http_url(value)


class SilencesConfig(StrictModel):
    """`[silences]`: while a run started by an Alertmanager alert acts on its target, a
    silence matching that alert's labels keeps the alert from paging again; the run expires
    it when it ends, whatever the outcome. The silence lasts `ends_after` and the run extends
    it every third of that while it holds it: a run that never ended its own way (terminated,
    or failed outside its own handling) stops silencing its alert within `ends_after`."""

    alertmanager_url: str
    # Alertmanager itself has no auth; a proxy in front of it may want a bearer token.
    token: SecretRef | None = None
    ends_after: timedelta = Field(default=timedelta(minutes=30), ge=timedelta(seconds=3))
    timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("alertmanager_url")
    @classmethod
    def _http(cls, value: str) -> str:
        return _http_url(value)
