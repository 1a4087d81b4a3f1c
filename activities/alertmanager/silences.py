"""Silences in Alertmanager (API v2) for the alert a run is acting on.

While a run acts on its alert's target, that alert firing again pages nobody new: the run is
the response. The silence matches the alert's labels exactly (one equality matcher each),
says in its comment which run holds it (with the run's page, `activities/links.py`), and is
created by "remediation-engine". The run expires it when it ends, whatever the outcome. It
lasts `[silences] ends_after` (30 min by default) and the run extends it every third of that
while it lives, so a run that never could expire it (terminated from outside) stops silencing
its alert within `ends_after`.

Creating is idempotent: a run's silence is found again by its comment's run key and its
matchers before another is made, so a retried activity (or a replayed step) makes one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from temporalio import activity

from activities.alertmanager.models import (
    CreateSilenceInput,
    ExpireSilenceInput,
    ExpireSilenceResult,
    ExtendSilenceInput,
    ExtendSilenceResult,
    SilenceResult,
)
from activities.config import load_config
from activities.http.errors import ProviderError, error_for_status, redact, unreachable
from activities.links import run_page_url
from activities.secrets.references import resolve_secret
from activities.senders_config import SilencesConfig

CREATED_BY = "remediation-engine"
CONFIG_HINT = "[silences]"


class AlertmanagerError(ProviderError):
    error_type = "AlertmanagerError"


def run_key(workflow_id: str, run_id: str) -> str:
    """What marks a silence as this run's, in its comment."""
    return f"[run {workflow_id}/{run_id}]"


def matchers(labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {"name": name, "value": value, "isRegex": False, "isEqual": True}
        for name, value in sorted(labels.items())
    ]


class AlertmanagerApi:
    def __init__(self, config: SilencesConfig) -> None:
        self.config = config
        self.token = resolve_secret(config.token) if config.token is not None else ""

    async def request(
        self, method: str, path: str, what: str, body: dict[str, Any] | None = None
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            async with httpx.AsyncClient(timeout=self.config.timeout_seconds) as client:
                url = f"{self.config.alertmanager_url}/api/v2{path}"
                response = await client.request(method, url, json=body, headers=headers)
        except httpx.TransportError as exc:
            error = unreachable("Alertmanager", what, exc, self.token, error=AlertmanagerError)
            raise error from None
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise error_for_status(
                "Alertmanager",
                response.status_code,
                what,
                redact(response.text, self.token),
                response.headers.get("Retry-After"),
                config_hint=f"{CONFIG_HINT} alertmanager_url",
                error=AlertmanagerError,
            )
        return response.json() if response.content else None

    async def find(self, key: str, wanted: list[dict[str, Any]]) -> str | None:
        """The id of a silence not yet over, created by the engine for this run and alert."""
        silences = await self.request("GET", "/silences", "list silences") or []
        for silence in silences:
            if (
                silence.get("createdBy") == CREATED_BY
                and key in str(silence.get("comment", ""))
                and silence.get("status", {}).get("state") in ("active", "pending")
                and _same_matchers(silence.get("matchers", []), wanted)
            ):
                return str(silence["id"])
        return None


def _same_matchers(found: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> bool:
    def key(m: dict[str, Any]) -> tuple[str, str, bool, bool]:
        return (m["name"], m["value"], bool(m.get("isRegex")), bool(m.get("isEqual", True)))

    return sorted(map(key, found)) == sorted(map(key, wanted))


def comment(params: CreateSilenceInput, run_url: str | None) -> str:
    where = f" {run_url}" if run_url else f" (`remediate status {params.workflow_id}`)"
    return (
        f"{params.runbook} run {params.workflow_id} is acting on this alert's target; the run "
        f"expires this silence when it ends.{where} {run_key(params.workflow_id, params.run_id)}"
    )


@activity.defn
async def create_silence(params: CreateSilenceInput) -> SilenceResult:
    """A silence of the run's alert in Alertmanager, unless the run has one already."""
    engine = load_config()
    config = engine.silences
    if config is None:
        return SilenceResult(configured=False)
    if not params.labels:
        # No matcher would match every alert: an empty selection is a stop, never "all".
        raise AlertmanagerError(
            f"run {params.workflow_id}'s alert has no labels: nothing to silence it by",
            retryable=False,
        )
    api = AlertmanagerApi(config)
    wanted = matchers(params.labels)
    found = await api.find(run_key(params.workflow_id, params.run_id), wanted)
    lasts = config.ends_after.total_seconds()
    if found is not None:
        return SilenceResult(silence_id=found, already_existed=True, ends_after_seconds=lasts)
    now = datetime.now(UTC)
    created = await api.request(
        "POST",
        "/silences",
        f"create a silence for run {params.workflow_id}",
        {
            "matchers": wanted,
            "startsAt": now.isoformat(),
            "endsAt": (now + config.ends_after).isoformat(),
            "createdBy": CREATED_BY,
            "comment": comment(params, run_page_url(engine, params.workflow_id)),
        },
    )
    return SilenceResult(silence_id=str(created["silenceID"]), ends_after_seconds=lasts)


@activity.defn
async def extend_silence(params: ExtendSilenceInput) -> ExtendSilenceResult:
    """Move the run's silence's end to `ends_after` from now, if it still holds; one that is
    over (expired by a person, or lapsed) is left over."""
    config = load_config().silences
    if config is None:
        return ExtendSilenceResult(configured=False)
    api = AlertmanagerApi(config)
    silence = await _still_holding(api, params.silence_id)
    if silence is None:
        return ExtendSilenceResult()
    ends_at = datetime.now(UTC) + config.ends_after
    updated = await api.request(
        "POST",
        "/silences",
        f"extend silence {params.silence_id}",
        {
            "id": params.silence_id,
            "matchers": silence["matchers"],
            "startsAt": silence["startsAt"],
            "endsAt": ends_at.isoformat(),
            "createdBy": silence["createdBy"],
            "comment": silence["comment"],
        },
    )
    return ExtendSilenceResult(silence_id=str(updated["silenceID"]))


@activity.defn
async def expire_silence(params: ExpireSilenceInput) -> ExpireSilenceResult:
    """Expire the run's silence; one already over (or gone) is left as it is."""
    config = load_config().silences
    if config is None:
        return ExpireSilenceResult(configured=False)
    api = AlertmanagerApi(config)
    if await _still_holding(api, params.silence_id) is None:
        return ExpireSilenceResult(already_over=True)
    await api.request("DELETE", _path(params.silence_id), f"expire silence {params.silence_id}")
    return ExpireSilenceResult(expired=True)


def _path(silence_id: str) -> str:
    return f"/silence/{quote(silence_id, safe='')}"


async def _still_holding(api: AlertmanagerApi, silence_id: str) -> dict[str, Any] | None:
    """The silence as Alertmanager has it, or None when it is gone or already over."""
    silence = await api.request("GET", _path(silence_id), f"read silence {silence_id}")
    if silence is None or silence.get("status", {}).get("state") == "expired":
        return None
    return dict(silence)
