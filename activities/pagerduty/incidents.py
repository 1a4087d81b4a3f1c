"""Notes on a PagerDuty incident and its resolution, through the REST API v2.

Requests carry `Authorization: Token token=<REST API key>`, the v2 `Accept` header and `From`
(the email of a valid PagerDuty user: PagerDuty records notes and status changes as them).
Both operations are idempotent, as retries need: a note carries a key (the notification's
workflow, run and activity id) and is added only if no note of the incident has it yet; an
incident already resolved is left alone.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from temporalio import activity

from activities.config import load_config
from activities.http.errors import ProviderError, error_for_status, redact, unreachable
from activities.pagerduty.models import ResolveIncidentInput, ResolveIncidentResult
from activities.secrets.references import resolve_secret
from activities.senders_config import PagerDutyConfig

CONFIG_HINT = "[pagerduty]"
ACCEPT = "application/vnd.pagerduty+json;version=2"


class PagerDutyError(ProviderError):
    error_type = "PagerDutyError"


class PagerDutyApi:
    """The few REST API v2 calls the engine makes, with the errors mapped once."""

    def __init__(self, config: PagerDutyConfig) -> None:
        self.config = config
        self.token = resolve_secret(config.token)

    async def request(
        self, method: str, path: str, what: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        headers = {
            "Authorization": f"Token token={self.token}",
            "Accept": ACCEPT,
            "From": self.config.from_email,
        }
        try:
            async with httpx.AsyncClient(timeout=self.config.timeout_seconds) as client:
                response = await client.request(
                    method, self.config.api_url + path, json=body, headers=headers
                )
        except httpx.TransportError as exc:
            raise unreachable("PagerDuty", what, exc, self.token, error=PagerDutyError) from None
        if response.status_code >= 400:
            raise self._error(response, what)
        data: dict[str, Any] = response.json() if response.content else {}
        return data

    def _error(self, response: httpx.Response, what: str) -> ProviderError:
        body = redact(response.text, self.token)
        if response.status_code == 400:
            # PagerDuty's 400s name what it could not accept ("Requester User Not Found",
            # an invalid status); the fix is in the config or the incident's state.
            return PagerDutyError(
                f"PagerDuty refused to {what}: 400 ({body[:300]}); check that [pagerduty] "
                "from_email is the email of a valid PagerDuty user of the account",
                status=400,
                retryable=False,
            )
        return error_for_status(
            "PagerDuty",
            response.status_code,
            what,
            body,
            # PagerDuty says how long to wait in `ratelimit-reset` (seconds).
            response.headers.get("Retry-After") or response.headers.get("ratelimit-reset"),
            config_hint=CONFIG_HINT + " (token) or the incident id",
            error=PagerDutyError,
        )

    async def add_note(self, incident_id: str, content: str, key: str) -> str:
        """The id of the incident's note carrying `key`, added now unless one already is."""
        path = f"/incidents/{quote(incident_id, safe='')}/notes"
        listed = await self.request("GET", path, f"list the notes of incident {incident_id}")
        for note in listed.get("notes", []):
            if key in str(note.get("content", "")):
                return str(note.get("id", ""))
        created = await self.request(
            "POST",
            path,
            f"add a note to incident {incident_id}",
            {"note": {"content": f"{content}\n[{key}]"}},
        )
        return str(created.get("note", {}).get("id", ""))

    async def status(self, incident_id: str) -> str:
        path = f"/incidents/{quote(incident_id, safe='')}"
        data = await self.request("GET", path, f"read incident {incident_id}")
        return str(data.get("incident", {}).get("status", ""))

    async def resolve(self, incident_id: str) -> None:
        await self.request(
            "PUT",
            f"/incidents/{quote(incident_id, safe='')}",
            f"resolve incident {incident_id}",
            {"incident": {"type": "incident_reference", "status": "resolved"}},
        )


def note_key(workflow_id: str) -> str:
    """What marks a note as this notification's, across retries of its activity."""
    info = activity.info()
    return f"remediation-engine {workflow_id}/{info.workflow_run_id}/{info.activity_id}"


@activity.defn
async def resolve_incident(params: ResolveIncidentInput) -> ResolveIncidentResult:
    """Resolve the run's incident once its remediation is verified, saying why in a note."""
    config = load_config().pagerduty
    if config is None or not config.resolve_when_verified:
        return ResolveIncidentResult(configured=False)
    api = PagerDutyApi(config)
    if await api.status(params.incident_id) == "resolved":
        return ResolveIncidentResult(already_resolved=True)
    await api.add_note(
        params.incident_id,
        f"Resolved by the remediation engine: {params.summary}",
        note_key(params.workflow_id),
    )
    await api.resolve(params.incident_id)
    return ResolveIncidentResult(resolved=True)
