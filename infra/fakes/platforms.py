"""One scenario, three deploy platforms: each adapter turns the same releases into its
fake's own scenario (Vercel REST, Railway GraphQL, generic HTTP) and reads back what the
engine did there."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import BaseModel

from activities.config import GenericDeploy, RailwayDeploy, VercelDeploy
from activities.deploy.generic import GenericProvider
from activities.deploy.models import Deployment
from activities.deploy.railway import RailwayProvider
from activities.deploy.vercel import VercelProvider

EPOCH = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


class Release(BaseModel):
    """A release in platform-neutral terms: `rel-NNN`, an hour apart, healthy or broken."""

    name: str
    created_at: datetime
    healthy: bool = True
    # A release whose build or deploy failed: it never served and is no rollback target.
    failed: bool = False
    commit: str

    @classmethod
    def numbered(cls, i: int, count: int, healthy: bool = True) -> Release:
        return cls(
            name=f"rel-{i:03d}",
            created_at=EPOCH + timedelta(hours=i),
            healthy=healthy,
            commit=f"{i:03d}{uuid.uuid5(uuid.NAMESPACE_DNS, str(i)).hex[:37]}",
        )


@dataclass(frozen=True)
class Platform:
    name: str
    module: str
    token_env: str
    token: str
    url: str = ""

    def at(self, url: str) -> Platform:
        return replace(self, url=url)

    def id_of(self, release: str) -> str:
        return {"vercel": f"dpl_{release}", "railway": f"dep-{release}"}.get(self.name, release)

    def release_of(self, deployment: Deployment) -> str:
        return f"rel-{deployment.commit[:3]}" if deployment.commit else deployment.id

    def deploy_toml(self) -> str:
        token = f'token = {{ env = "{self.token_env}" }}'
        if self.name == "vercel":
            return f'provider = "vercel"\nproject = "web"\napi_url = "{self.url}"\n{token}'
        if self.name == "railway":
            return (
                'provider = "railway"\nservice_id = "svc-web"\nenvironment_id = "env-prod"\n'
                f'api_url = "{self.url}/graphql/v2"\n{token}'
            )
        return (
            f'provider = "generic"\ncurrent_url = "{self.url}/current"\n'
            f'list_url = "{self.url}/deployments"\nrollback_url = "{self.url}/rollback"\n'
            f'restart_url = "{self.url}/restart"\n{token}'
        )

    async def scenario(
        self,
        releases: list[Release],
        *,
        current: str,
        on_switch: str,
        rate_limit_next: int = 0,
        fail_next_rollback: bool = False,
        switch_after_seconds: float = 0.0,
    ) -> None:
        body = self._scenario(releases, current, on_switch, rate_limit_next, fail_next_rollback)
        body["switch_after_seconds"] = switch_after_seconds
        async with httpx.AsyncClient(base_url=self.url) as client:
            (await client.post("/_fake/scenario", json=body)).raise_for_status()
            serving = next(r for r in releases if r.name == current)
            announce = {"deployment_id": self.id_of(current), "good": serving.healthy}
            (await client.post(on_switch, json=announce)).raise_for_status()

    def _scenario(
        self,
        releases: list[Release],
        current: str,
        on_switch: str,
        rate_limit_next: int,
        fail_next_rollback: bool,
    ) -> dict[str, Any]:
        common = {
            "token": self.token,
            "rate_limit_next": rate_limit_next,
            "fail_next_rollback": fail_next_rollback,
            "on_switch_url": on_switch,
        }
        if self.name == "vercel":
            return {
                **common,
                "rate_limit_retry_after_seconds": 1,
                "production": self.id_of(current),
                "deployments": [
                    {
                        "uid": self.id_of(r.name),
                        "created": int(r.created_at.timestamp() * 1000),
                        "state": "ERROR" if r.failed else "READY",
                        "meta": {"githubCommitSha": r.commit, "githubCommitMessage": r.name},
                        "healthy": r.healthy,
                    }
                    for r in releases
                ],
            }
        if self.name == "railway":
            return {
                **common,
                "retry_after_seconds": 1,
                "service_id": "svc-web",
                "environment_id": "env-prod",
                "deployments": [
                    {
                        "id": self.id_of(r.name),
                        "createdAt": r.created_at.isoformat(),
                        "status": "FAILED"
                        if r.failed
                        else ("SUCCESS" if r.name == current else "REMOVED"),
                        "meta": {"commitHash": r.commit, "commitMessage": r.name},
                        "healthy": r.healthy,
                    }
                    for r in releases
                ],
            }
        return {
            **common,
            "retry_after_seconds": 1,
            "current": current,
            "deployments": [
                {
                    "id": r.name,
                    "created_at": r.created_at.isoformat(),
                    "commit": r.commit,
                    "state": "failed" if r.failed else "ready",
                    "healthy": r.healthy,
                }
                for r in releases
            ],
        }

    async def calls(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.url) as client:
            response = await client.get("/_fake/calls")
            response.raise_for_status()
            calls: list[dict[str, Any]] = response.json()
            return calls

    async def rollbacks_requested(self) -> int:
        def is_switch(call: dict[str, Any]) -> bool:
            if self.name == "railway":
                return "deploymentRollback" in str(call) or "deploymentRedeploy" in str(call)
            path = str(call.get("path", ""))
            return call.get("method") == "POST" and ("rollback" in path or "promote" in path)

        return sum(1 for c in await self.calls() if is_switch(c))

    async def rate_limit_left(self) -> int:
        """429 answers the fake still has to give: 0 once the storm was sat through."""
        async with httpx.AsyncClient(base_url=self.url) as client:
            state = (await client.get("/_fake/state")).json()
        return int(state["rate_limit_left"])

    async def serving(self) -> str:
        async with httpx.AsyncClient() as client:
            return self.release_of(await self.provider(client).current())

    async def roll_back_by_hand(self, deployment_id: str) -> None:
        """What a person at a terminal does (`vercel rollback`, Railway's Rollback button)."""
        async with httpx.AsyncClient() as client:
            provider = self.provider(client)
            history = await provider.history(20)
            to = next(d for d in history if d.id == deployment_id)
            await provider.rollback(to, "by-hand")
            for _ in range(100):
                if (await provider.rollback_progress(to)).state == "succeeded":
                    return
                await asyncio.sleep(0.1)
        raise AssertionError(f"hand rollback to {deployment_id} did not finish")

    def provider(self, client: httpx.AsyncClient) -> Any:
        if self.name == "vercel":
            return VercelProvider(
                VercelDeploy.model_validate(
                    {
                        "provider": "vercel",
                        "project": "web",
                        "api_url": self.url,
                        "token": {"env": self.token_env},
                    }
                ),
                self.token,
                client,
            )
        if self.name == "railway":
            return RailwayProvider(
                RailwayDeploy.model_validate(
                    {
                        "provider": "railway",
                        "service_id": "svc-web",
                        "environment_id": "env-prod",
                        "api_url": f"{self.url}/graphql/v2",
                        "token": {"env": self.token_env},
                    }
                ),
                self.token,
                client,
            )
        return GenericProvider(
            GenericDeploy.model_validate(
                {
                    "provider": "generic",
                    "current_url": f"{self.url}/current",
                    "list_url": f"{self.url}/deployments",
                    "rollback_url": f"{self.url}/rollback",
                    "token": {"env": self.token_env},
                }
            ),
            self.token,
            client,
        )


GENERIC = Platform("generic", "infra.fakes.generic_deploy", "GENERIC_DEPLOY_TOKEN_T", "gen-tok-1")
VERCEL = Platform("vercel", "infra.fakes.vercel", "VERCEL_TOKEN_T", "vercel-tok-1")
RAILWAY = Platform("railway", "infra.fakes.railway", "RAILWAY_TOKEN_T", "railway-tok-1")
