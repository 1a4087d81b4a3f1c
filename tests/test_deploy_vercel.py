"""The Vercel provider against the local fake Vercel API, served by a real HTTP server."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from activities.config import SecretRef, VercelDeploy
from activities.deploy.models import Deployment, RollbackProgress
from activities.deploy.vercel import VercelProvider
from activities.http.errors import ProviderError
from infra.local_postgres import free_port
from infra.processes import server_process
from tests.support import eventually

TOKEN = "vercel-token-ok"
BASE_MS = 1_700_000_000_000
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "infra.fakes.vercel", "--port", str(port)]
    with server_process(command, port, quiet=True):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def deployments(count: int, **overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """`dpl_00` (oldest) .. `dpl_NN` (newest), an hour apart, READY unless overridden."""
    rows = []
    for i in range(count):
        uid = f"dpl_{i:02d}"
        row: dict[str, Any] = {
            "uid": uid,
            "created": BASE_MS + i * HOUR_MS,
            "state": "READY",
            "meta": {"githubCommitSha": f"{i:02d}" + "a" * 38, "githubCommitMessage": f"c{i}"},
            "url": f"web-{uid}.vercel.app",
        }
        row.update(overrides.get(uid, {}))
        rows.append(row)
    return rows


async def scenario(client: httpx.AsyncClient, url: str, **fields: Any) -> None:
    body = {"project_id": "prj_web", "project_name": "web", "token": TOKEN, **fields}
    response = await client.post(f"{url}/_fake/scenario", json=body)
    response.raise_for_status()


async def calls(client: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    response = await client.get(f"{url}/_fake/calls")
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()
    return result


def provider(
    client: httpx.AsyncClient,
    url: str,
    *,
    project: str = "prj_web",
    token: str = TOKEN,
    team_id: str | None = None,
    page_size: int = 100,
) -> VercelProvider:
    config = VercelDeploy(
        provider="vercel",
        project=project,
        team_id=team_id,
        token=SecretRef(env="VERCEL_TOKEN"),
        api_url=url,
        timeout_seconds=5,
    )
    return VercelProvider(config, token, client, page_size=page_size)


async def wait_for(vercel: VercelProvider, to: Deployment, state: str) -> RollbackProgress:
    async def probe() -> RollbackProgress | None:
        progress = await vercel.rollback_progress(to)
        return progress if progress.state == state else None

    return await eventually(probe, seconds=5, every=0.05)


def by_id(items: list[Deployment]) -> dict[str, Deployment]:
    return {d.id: d for d in items}


async def test_history_follows_pagination(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(client, fake_url, deployments=deployments(25))
    vercel = provider(client, fake_url, page_size=10)

    history = await vercel.history(25)

    assert [d.id for d in history] == [f"dpl_{i:02d}" for i in range(24, -1, -1)]
    pages = [c for c in await calls(client, fake_url) if c["path"] == "/v6/deployments"]
    assert [p["query"].get("until") for p in pages] == [
        None,
        str(BASE_MS + 15 * HOUR_MS),
        str(BASE_MS + 5 * HOUR_MS),
    ]
    assert all(p["query"]["projectId"] == "prj_web" for p in pages)
    assert all(p["query"]["target"] == "production" for p in pages)
    assert [p["query"]["limit"] for p in pages] == ["10", "10", "5"]


async def test_history_stops_at_limit_or_last_page(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    await scenario(client, fake_url, deployments=deployments(25))
    vercel = provider(client, fake_url, page_size=10)

    assert len(await vercel.history(12)) == 12
    assert len(await vercel.history(100)) == 25


async def test_current_is_what_production_serves(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(client, fake_url, deployments=deployments(5), production="dpl_02")

    current = await provider(client, fake_url).current()

    assert current.id == "dpl_02"
    assert current.state == "ready"
    assert current.raw_state == "READY"
    assert current.url == "https://web-dpl_02.vercel.app"
    assert current.commit == "02" + "a" * 38
    assert current.message == "c2"
    assert current.created_at.timestamp() * 1000 == BASE_MS + 2 * HOUR_MS
    assert current.good


async def test_states_and_good_flags(client: httpx.AsyncClient, fake_url: str) -> None:
    states = {
        "dpl_01": {"state": "ERROR"},
        "dpl_02": {"state": "CANCELED"},
        "dpl_03": {"state": "BUILDING"},
        "dpl_04": {"state": "QUEUED"},
        "dpl_05": {"state": "INITIALIZING"},
    }
    rolled_back = {
        "fromDeploymentId": "dpl_06",
        "toDeploymentId": "dpl_00",
        "jobStatus": "succeeded",
        "requestedAt": BASE_MS + 7 * HOUR_MS,
        "type": "rollback",
    }
    await scenario(
        client,
        fake_url,
        deployments=deployments(7, **states),
        production="dpl_00",
        last_alias_request=rolled_back,
    )

    history = by_id(await provider(client, fake_url).history(10))

    assert {i: d.state for i, d in history.items()} == {
        "dpl_00": "ready",
        "dpl_01": "failed",
        "dpl_02": "canceled",
        "dpl_03": "building",
        "dpl_04": "building",
        "dpl_05": "building",
        "dpl_06": "ready",
    }
    assert {i for i, d in history.items() if not d.good} == {"dpl_01", "dpl_02", "dpl_06"}


async def test_rollback_then_progress_until_succeeded(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    await scenario(
        client,
        fake_url,
        deployments=deployments(3, dpl_01={"healthy": True}, dpl_02={"healthy": False}),
        switch_after_seconds=0.3,
        on_switch_url="http://127.0.0.1:9/release",  # nothing listens: best effort
    )
    vercel = provider(client, fake_url, project="web")  # by name: the provider finds the id
    target = by_id(await vercel.history(10))["dpl_01"]

    await vercel.rollback(target, key="plan-123")

    assert (await vercel.rollback_progress(target)).state == "in_progress"
    await wait_for(vercel, target, "succeeded")
    assert (await vercel.current()).id == "dpl_01"
    posts = [c for c in await calls(client, fake_url) if c["method"] == "POST"]
    assert [p["path"] for p in posts] == ["/v1/projects/prj_web/rollback/dpl_01"]
    assert "plan-123" in posts[0]["query"]["description"]
    # Production was rolled back away from dpl_02: it is no longer a good release.
    assert not by_id(await vercel.history(10))["dpl_02"].good
    state = (await client.get(f"{fake_url}/_fake/state")).json()
    assert state["notifications"][0]["payload"] == {"deployment_id": "dpl_01", "good": True}
    assert "error" in state["notifications"][0]


async def test_promote_rolls_forward(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(client, fake_url, deployments=deployments(3), production="dpl_00")
    vercel = provider(client, fake_url)
    newest = by_id(await vercel.history(10))["dpl_02"]

    await vercel.rollback(newest, key="plan-9")

    await wait_for(vercel, newest, "succeeded")
    posts = [c["path"] for c in await calls(client, fake_url) if c["method"] == "POST"]
    assert posts == ["/v10/projects/prj_web/promote/dpl_02"]


async def test_rollback_to_current_does_nothing(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(client, fake_url, deployments=deployments(3))
    vercel = provider(client, fake_url)

    await vercel.rollback(await vercel.current(), key="k")

    assert not [c for c in await calls(client, fake_url) if c["method"] == "POST"]


async def test_starting_the_same_rollback_twice_is_harmless(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    await scenario(client, fake_url, deployments=deployments(3), switch_after_seconds=0.3)
    vercel = provider(client, fake_url)
    target = by_id(await vercel.history(10))["dpl_00"]

    await vercel.rollback(target, key="k")
    await vercel.rollback(target, key="k")  # the fake answers 409: already under way

    await wait_for(vercel, target, "succeeded")
    posts = [c for c in await calls(client, fake_url) if c["method"] == "POST"]
    assert len(posts) == 2


async def test_failed_rollback_reports_failed(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(client, fake_url, deployments=deployments(3), fail_next_rollback=True)
    vercel = provider(client, fake_url)
    target = by_id(await vercel.history(10))["dpl_00"]

    await vercel.rollback(target, key="k")

    progress = await wait_for(vercel, target, "failed")
    assert "failed" in progress.detail
    assert (await vercel.current()).id == "dpl_02"


async def test_wrong_token_is_401_and_names_the_token(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    await scenario(client, fake_url, deployments=deployments(2))

    with pytest.raises(ProviderError) as caught:
        await provider(client, fake_url, token="wrong").current()

    assert caught.value.status == 401
    assert caught.value.non_retryable
    assert "token" in caught.value.message


async def test_token_without_access_is_403(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(client, fake_url, deployments=deployments(2), forbidden_tokens=["limited"])

    with pytest.raises(ProviderError) as caught:
        await provider(client, fake_url, token="limited").history(5)

    assert caught.value.status == 403
    assert caught.value.non_retryable


async def test_unknown_project_is_404(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(client, fake_url, deployments=deployments(2))

    with pytest.raises(ProviderError) as caught:
        await provider(client, fake_url, project="prj_nope").current()

    assert caught.value.status == 404
    assert caught.value.non_retryable
    assert "not_found" in caught.value.message


async def test_rate_limit_waits_retry_after(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(
        client,
        fake_url,
        deployments=deployments(2),
        rate_limit_next=1,
        rate_limit_retry_after_seconds=7,
    )
    vercel = provider(client, fake_url)

    with pytest.raises(ProviderError) as caught:
        await vercel.current()

    assert caught.value.status == 429
    assert not caught.value.non_retryable
    assert caught.value.next_retry_delay == timedelta(seconds=7)
    assert (await vercel.current()).id == "dpl_01"  # only the next request was limited


async def test_rate_limit_without_retry_after_waits_for_reset(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    await scenario(
        client,
        fake_url,
        deployments=deployments(2),
        rate_limit_next=1,
        rate_limit_retry_after_seconds=30,
        rate_limit_send_retry_after=False,
    )

    with pytest.raises(ProviderError) as caught:
        await provider(client, fake_url).history(5)

    delay = caught.value.next_retry_delay
    assert delay is not None
    assert 27 <= delay.total_seconds() <= 30


async def test_team_id_is_sent_on_every_request(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(client, fake_url, deployments=deployments(3), team_id="team_abc")
    vercel = provider(client, fake_url, team_id="team_abc")

    target = by_id(await vercel.history(10))["dpl_00"]
    await vercel.rollback(target, key="k")
    await wait_for(vercel, target, "succeeded")

    recorded = await calls(client, fake_url)
    assert recorded
    assert all(c["query"].get("teamId") == "team_abc" for c in recorded)
    with pytest.raises(ProviderError) as caught:
        await provider(client, fake_url).current()  # the team's project, asked without teamId
    assert caught.value.status == 404


async def test_restart_redeploys_production_once_per_key(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    await scenario(client, fake_url, deployments=deployments(2), switch_after_seconds=0.2)
    vercel = provider(client, fake_url)

    await vercel.restart("plan-7")
    await vercel.restart("plan-7")  # a retried activity: the redeploy is already there

    creates = [c for c in await calls(client, fake_url) if c["path"] == "/v13/deployments"]
    assert len(creates) == 1

    async def switched() -> Deployment | None:
        current = await vercel.current()
        return current if current.id not in ("dpl_00", "dpl_01") else None

    current = await eventually(switched, seconds=5, every=0.05)
    assert current.state == "ready"
    assert current.commit == "01" + "a" * 38  # rebuilt from what production served


async def test_network_error_is_retryable(client: httpx.AsyncClient) -> None:
    closed = f"http://127.0.0.1:{free_port()}"

    with pytest.raises(ProviderError) as caught:
        await provider(client, closed).current()

    assert not caught.value.non_retryable
    assert caught.value.status is None


async def test_fake_get_deployment_and_error_shape(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    await scenario(client, fake_url, deployments=deployments(2))
    auth = {"Authorization": f"Bearer {TOKEN}"}

    found = await client.get(f"{fake_url}/v13/deployments/web-dpl_01.vercel.app", headers=auth)
    missing = await client.get(f"{fake_url}/v13/deployments/dpl_zz", headers=auth)
    anonymous = await client.get(f"{fake_url}/v13/deployments/dpl_01")

    assert found.json()["id"] == "dpl_01"
    assert found.json()["readyState"] == "READY"
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert anonymous.status_code == 401
    assert set(anonymous.json()["error"]) == {"code", "message"}


def test_retry_after_header_math() -> None:
    from activities.deploy.vercel import retry_after

    now = time.time()
    assert retry_after({"Retry-After": "12"}, now) == "12"
    assert retry_after({"X-RateLimit-Reset": str(int(now) + 10)}, int(now)) == "10.000"
    assert retry_after({"X-RateLimit-Reset": str((int(now) + 4) * 1000)}, int(now)) == "4.000"
    assert retry_after({"X-RateLimit-Reset": "soon"}, now) is None
    assert retry_after({}, now) is None
