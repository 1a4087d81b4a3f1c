"""Vercel deploy provider: production deployments of one project over Vercel's REST API.

Endpoints used (https://vercel.com/docs/rest-api), all with `Authorization: Bearer <token>`
and `?teamId=` when the target's config names a team:

- `GET /v9/projects/{idOrName}`: the project. `targets.production` is the deployment production
  serves; `lastAliasRequest` (`{fromDeploymentId, toDeploymentId, jobStatus, requestedAt,
  type: "rollback" | "promote"}`) is the latest rollback or promotion and how it went
  (`pending`, `in-progress`, `succeeded`, `failed`, `skipped`).
- `GET /v6/deployments?projectId=&target=production&limit=&until=`: production deployments,
  newest first, as `{"deployments": [...], "pagination": {"count", "next", "prev"}}`. Items carry
  `uid`, `url` (a hostname), `created` (ms), `state`/`readyState`, `target` and `meta`
  (`githubCommitSha`, `githubCommitMessage`, ...). `pagination.next` goes back as `until`.
- `POST /v1/projects/{projectId}/rollback/{deploymentId}?description=`: instant rollback to an
  older production deployment (201). The docs name v1; the Vercel CLI still calls the same
  route as v9, which the fake also answers.
- `POST /v10/projects/{projectId}/promote/{deploymentId}`: point production at a newer
  deployment without rebuilding it ("roll forward", 201 or 202).
- `POST /v13/deployments` with `{"name", "deploymentId", "target": "production", "meta"}`:
  redeploy a previous deployment, the closest thing Vercel has to a restart.

Errors have the body `{"error": {"code", "message"}}`; every non-2xx answer goes through
`error_for_status`. A 429 waits `Retry-After` seconds when present, else until
`X-RateLimit-Reset`.

Where the docs are silent, this module chooses:

- `X-RateLimit-Reset` is read as UTC epoch seconds, like the `reset` field of the documented
  `rate_limited` error body (a value that only makes sense as milliseconds is read as such).
- "Rolled back away from" is known only for the latest request: the project exposes one
  `lastAliasRequest`, so only its `fromDeploymentId` (and `fromRollingReleaseId`) of a
  `rollback` is marked `good=False`.
- Rollback (older than production) vs promote (newer) is decided by `created` timestamps.
  `key` is sent as the rollback's `description`; promote takes no such field.
- Vercel has no idempotency key for deployments. `restart(key)` records the key in the new
  deployment's `meta.remediationKey` and first looks for a recent production deployment that
  already carries it, so retrying the same restart does not redeploy twice.
- Deployment URLs are hostnames; they are reported as `https://<hostname>`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from activities.config import VercelDeploy
from activities.deploy.models import Deployment, DeployState, RollbackProgress
from activities.http.errors import ProviderError, error_for_status, unreachable

VENDOR = "Vercel"
Json = Mapping[str, Any]

_STATES: dict[str, DeployState] = {
    "READY": "ready",
    "ERROR": "failed",
    "CANCELED": "canceled",
    "BUILDING": "building",
    "QUEUED": "building",
    "INITIALIZING": "building",
}
_KNOWN_BAD: frozenset[DeployState] = frozenset({"failed", "canceled"})
_GIT_PROVIDERS = ("github", "gitlab", "bitbucket")
KEY_META = "remediationKey"
# How many recent production deployments `restart` searches for an earlier redeploy.
RECENT = 20


class VercelProvider:
    """A `DeployProvider` for one Vercel project (`config.project`: its id or name)."""

    def __init__(
        self,
        config: VercelDeploy,
        token: str,
        client: httpx.AsyncClient,
        *,
        page_size: int = 100,
    ) -> None:
        self._config = config
        self._client = client
        self._base = config.api_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._page_size = max(1, min(page_size, 100))

    # -- DeployProvider ------------------------------------------------------------------

    async def current(self) -> Deployment:
        project = await self._project()
        return _production(project, _rolled_back_from(project))

    async def history(self, limit: int) -> list[Deployment]:
        project = await self._project()
        bad = _rolled_back_from(project)
        return [_from_list_item(item, bad) for item in await self._list_production(limit)]

    async def rollback(self, to: Deployment, key: str) -> None:
        project = await self._project()
        current = _production(project, frozenset())
        if current.id == to.id:
            return
        project_id = _text(project, "id", "the project")
        if to.created_at < current.created_at:
            what = f"roll project {project_id} back to {to.id}"
            path = f"/v1/projects/{project_id}/rollback/{to.id}"
            params = {"description": f"remediation {key}"}
        else:
            what = f"promote {to.id} in project {project_id}"
            path = f"/v10/projects/{project_id}/promote/{to.id}"
            params = {}
        response = await self._send("POST", path, what, params=params, body={})
        if response.status_code == 409 and await self._switching_to(to.id):
            return  # the same switch is already under way: starting it again is a no-op
        self._check(response, what)

    async def rollback_progress(self, to: Deployment) -> RollbackProgress:
        project = await self._project()
        serving = _production_id(project)
        if serving == to.id:
            return RollbackProgress(state="succeeded", detail=f"production serves {to.id}")
        request = _alias_request(project)
        status = str(request.get("jobStatus", "")) if request else ""
        if request and request.get("toDeploymentId") == to.id and status in ("failed", "skipped"):
            kind = request.get("type", "switch")
            detail = f"Vercel reports the {kind} to {to.id} {status}; production serves {serving}"
            return RollbackProgress(state="failed", detail=detail)
        detail = f"production serves {serving}; last switch request: {status or 'none'}"
        return RollbackProgress(state="in_progress", detail=detail)

    async def restart(self, key: str) -> None:
        """Redeploy the production deployment (a rebuild: Vercel has no in-place restart)."""
        project = await self._project()
        if await self._redeployed_with(key):
            return
        source = _production_id(project)
        if source is None:
            raise _no_production(project)
        body = {
            "name": _text(project, "name", "the project"),
            "deploymentId": source,
            "target": "production",
            "meta": {KEY_META: key},
        }
        what = f"redeploy {source}"
        self._check(await self._send("POST", "/v13/deployments", what, body=body), what)

    # -- requests ------------------------------------------------------------------------

    async def _project(self) -> Json:
        what = f"read project {self._config.project}"
        return await self._get_json(f"/v9/projects/{quote(self._config.project, safe='')}", what)

    async def _list_production(self, limit: int) -> list[Json]:
        items: list[Json] = []
        seen: set[str] = set()
        until: int | None = None
        while len(items) < limit:
            page, next_until = await self._deployments_page(
                min(self._page_size, limit - len(items)), until
            )
            fresh = [item for item in page if str(item.get("uid")) not in seen]
            seen.update(str(item.get("uid")) for item in fresh)
            items.extend(fresh)
            if not fresh or next_until is None or (until is not None and next_until >= until):
                break
            until = next_until
        return items[:limit]

    async def _deployments_page(
        self, size: int, until: int | None
    ) -> tuple[list[Json], int | None]:
        params: dict[str, str | int] = {
            "projectId": self._config.project,
            "target": "production",
            "limit": size,
        }
        if until is not None:
            params["until"] = until
        what = f"list deployments of project {self._config.project}"
        data = await self._get_json("/v6/deployments", what, params)
        deployments = data.get("deployments")
        if not isinstance(deployments, list):
            raise _unexpected(what, "no `deployments` list")
        pagination = data.get("pagination")
        next_until = pagination.get("next") if isinstance(pagination, Mapping) else None
        page = [item for item in deployments if isinstance(item, Mapping)]
        return page, int(next_until) if isinstance(next_until, int | float) else None

    async def _switching_to(self, deployment_id: str) -> bool:
        request = _alias_request(await self._project())
        return bool(
            request
            and request.get("toDeploymentId") == deployment_id
            and request.get("jobStatus") in ("pending", "in-progress")
        )

    async def _redeployed_with(self, key: str) -> bool:
        """Whether a recent production deployment was already made for this key."""
        page, _ = await self._deployments_page(min(self._page_size, RECENT), None)
        for item in page:
            meta = item.get("meta")
            if isinstance(meta, Mapping) and meta.get(KEY_META) == key:
                return True
        return False

    async def _get_json(
        self, path: str, what: str, params: Mapping[str, str | int] | None = None
    ) -> Json:
        response = await self._send("GET", path, what, params=params)
        self._check(response, what)
        try:
            data = response.json()
        except ValueError as exc:
            raise _unexpected(what, "the answer is not JSON") from exc
        if not isinstance(data, Mapping):
            raise _unexpected(what, "the answer is not a JSON object")
        return data

    async def _send(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        query: dict[str, str | int] = dict(params or {})
        if self._config.team_id:
            query["teamId"] = self._config.team_id
        try:
            return await self._client.request(
                method,
                f"{self._base}{path}",
                params=query,
                json=body,
                headers=self._headers,
                timeout=self._config.timeout_seconds,
            )
        except httpx.TransportError as exc:
            raise unreachable(VENDOR, what, exc) from None

    @staticmethod
    def _check(response: httpx.Response, what: str) -> None:
        if response.is_success:
            return
        raise error_for_status(
            VENDOR,
            response.status_code,
            what,
            _error_text(response),
            retry_after=retry_after(response.headers),
        )


# -- response shapes -----------------------------------------------------------------------


def retry_after(headers: Mapping[str, str], now: float | None = None) -> str | None:
    """Seconds to wait: `Retry-After` when present, else the time until `X-RateLimit-Reset`."""
    if value := headers.get("Retry-After"):
        return value
    reset = headers.get("X-RateLimit-Reset")
    try:
        reset_at = float(reset) if reset is not None else None
    except ValueError:
        return None
    if reset_at is None:
        return None
    if reset_at > 1e11:  # milliseconds, not seconds
        reset_at /= 1000
    return f"{max(reset_at - (time.time() if now is None else now), 0.0):.3f}"


def _error_text(response: httpx.Response) -> str:
    """`code: message` from Vercel's error body, else the raw text."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return response.text
    if isinstance(error, Mapping) and error.get("message"):
        return f"{error.get('code', 'error')}: {error['message']}"
    return response.text


def _alias_request(project: Json) -> Json | None:
    request = project.get("lastAliasRequest")
    return request if isinstance(request, Mapping) else None


def _rolled_back_from(project: Json) -> frozenset[str]:
    """Deployments production was rolled back away from (only the latest request is known)."""
    request = _alias_request(project)
    if not request or request.get("type") != "rollback":
        return frozenset()
    ids = (request.get("fromDeploymentId"), request.get("fromRollingReleaseId"))
    return frozenset(str(i) for i in ids if i)


def _production_raw(project: Json) -> Json | None:
    targets = project.get("targets")
    production = targets.get("production") if isinstance(targets, Mapping) else None
    return production if isinstance(production, Mapping) else None


def _production_id(project: Json) -> str | None:
    production = _production_raw(project)
    return str(production["id"]) if production and production.get("id") else None


def _production(project: Json, bad: frozenset[str]) -> Deployment:
    production = _production_raw(project)
    if production is None:
        raise _no_production(project)
    return _deployment(production, str(production.get("id", "")), "createdAt", bad)


def _from_list_item(item: Json, bad: frozenset[str]) -> Deployment:
    return _deployment(item, str(item.get("uid", "")), "created", bad)


def _deployment(raw: Json, deployment_id: str, created_key: str, bad: frozenset[str]) -> Deployment:
    if not deployment_id:
        raise _unexpected("read a deployment", "a deployment has no id")
    raw_state = str(raw.get("readyState") or raw.get("state") or "UNKNOWN")
    state = _STATES.get(raw_state.upper(), "unknown")
    meta = raw.get("meta")
    meta = meta if isinstance(meta, Mapping) else {}
    host = raw.get("url")
    return Deployment(
        id=deployment_id,
        created_at=_timestamp(raw.get(created_key) or raw.get("createdAt") or raw.get("created")),
        state=state,
        raw_state=raw_state,
        url=_https(host) if isinstance(host, str) and host else None,
        commit=_meta(meta, "CommitSha"),
        message=_meta(meta, "CommitMessage"),
        good=state not in _KNOWN_BAD and deployment_id not in bad,
    )


def _meta(meta: Json, suffix: str) -> str | None:
    for provider in _GIT_PROVIDERS:
        value = meta.get(f"{provider}{suffix}")
        if isinstance(value, str) and value:
            return value
    return None


def _timestamp(value: object) -> datetime:
    if not isinstance(value, int | float):
        raise _unexpected("read a deployment", f"creation time {value!r} is not a timestamp")
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def _https(host: str) -> str:
    return host if host.startswith(("https://", "http://")) else f"https://{host}"


def _text(raw: Json, key: str, what: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise _unexpected(f"read {what}", f"no `{key}`")
    return value


def _no_production(project: Json) -> ProviderError:
    name = project.get("name") or project.get("id")
    return ProviderError(
        f"{VENDOR} project {name} has no production deployment (`targets.production` is empty)",
        retryable=False,
    )


def _unexpected(what: str, detail: str) -> ProviderError:
    return ProviderError(
        f"{VENDOR} answered an unexpected shape to {what}: {detail}", retryable=False
    )
