"""Generic HTTP deploy provider: for teams on their own tooling (pm2, Kubernetes via a small
hook, a deploy script behind an endpoint).

The contract your endpoints implement (JSON; bearer token if configured):

- `GET current_url` -> a deployment:
  `{"id", "created_at" (ISO 8601), "state" (ready|building|failed|canceled|removed),
    "url"?, "commit"?, "message"?, "good"? (false for a release known bad)}`
- `GET list_url?limit=N[&cursor=C]` -> `{"deployments": [deployment, ...] (newest first),
  "next_cursor": "C" | null}`
- `POST rollback_url` `{"deployment_id": "..."}`, header `Idempotency-Key` -> 202; the same key
  again must not start a second rollback.
- `GET rollback_url?deployment_id=...` -> `{"state": "in_progress"|"succeeded"|"failed",
  "detail"?}`
- `POST restart_url`, header `Idempotency-Key` -> 2xx.

Errors: 401/403/404 are final (fix the token or the URL); 429 with `Retry-After` is waited out.
"""

from __future__ import annotations

from typing import Any

import httpx

from activities.config import GenericDeploy
from activities.deploy.models import Deployment, RollbackProgress
from activities.http.errors import ProviderError, error_for_status, unreachable

VENDOR = "deploy endpoint"


class GenericProvider:
    def __init__(self, config: GenericDeploy, token: str | None, client: httpx.AsyncClient):
        self.config = config
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def _call(
        self,
        method: str,
        url: str,
        what: str,
        *,
        key: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        headers = dict(self.headers)
        if key is not None:
            headers["Idempotency-Key"] = key
        try:
            response = await self.client.request(method, url, headers=headers, **kwargs)
        except httpx.TransportError as err:
            raise unreachable(VENDOR, f"{what} ({url})", err) from None
        if response.status_code >= 400:
            raise error_for_status(
                VENDOR,
                response.status_code,
                what,
                response.text,
                response.headers.get("Retry-After"),
            )
        return response

    async def current(self) -> Deployment:
        response = await self._call("GET", self.config.current_url, "read the current release")
        return Deployment.model_validate(_with_raw_state(response.json()))

    async def history(self, limit: int) -> list[Deployment]:
        found: list[Deployment] = []
        cursor: str | None = None
        while len(found) < limit:
            params: dict[str, str | int] = {"limit": min(limit - len(found), 100)}
            if cursor:
                params["cursor"] = cursor
            response = await self._call(
                "GET", self.config.list_url, "list deployments", params=params
            )
            body = response.json()
            found += [Deployment.model_validate(_with_raw_state(d)) for d in body["deployments"]]
            cursor = body.get("next_cursor")
            if not cursor or not body["deployments"]:
                break
        return found[:limit]

    async def rollback(self, to: Deployment, key: str) -> None:
        await self._call(
            "POST",
            self.config.rollback_url,
            f"roll back to {to.id}",
            key=key,
            json={"deployment_id": to.id},
        )

    async def rollback_progress(self, to: Deployment) -> RollbackProgress:
        current = await self.current()
        if current.id == to.id:
            return RollbackProgress(state="succeeded", detail=f"{to.id} serves production")
        try:
            response = await self._call(
                "GET",
                self.config.rollback_url,
                f"read the rollback to {to.id}",
                params={"deployment_id": to.id},
            )
        except ProviderError as err:
            if err.status != 404:
                raise
            # The tool knows no rollback to it (yet): not started, or not registered yet.
            return RollbackProgress(state="in_progress", detail="no rollback to it requested")
        return RollbackProgress.model_validate(response.json())

    async def restart(self, key: str) -> None:
        if self.config.restart_url is None:
            raise ProviderError(
                "this target's [deploy] has no restart_url; add one to restart through it",
                retryable=False,
            )
        await self._call("POST", self.config.restart_url, "restart", key=key)


def _with_raw_state(body: dict[str, Any]) -> dict[str, Any]:
    return {"raw_state": str(body.get("state", "")), **body}
