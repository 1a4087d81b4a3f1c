"""The Railway provider against the local fake Railway GraphQL API, served by a real HTTP server."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from activities.config import RailwayDeploy, SecretRef
from activities.deploy.models import Deployment, RollbackProgress
from activities.deploy.railway import RailwayProvider
from activities.http.errors import ProviderError
from infra.local_postgres import free_port
from infra.processes import server_process
from tests.support import eventually

TOKEN = "railway-token-ok"
SERVICE, ENVIRONMENT = "svc-web", "env-production"
BASE = datetime(2024, 1, 1, tzinfo=UTC)
MUTATIONS = ("deploymentRollback", "deploymentRedeploy", "deploymentRestart")


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "infra.fakes.railway", "--port", str(port)]
    with server_process(command, port, quiet=True):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def commit(i: int) -> str:
    return f"{i:02d}" + "a" * 38


def deployments(count: int, **overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """`d00` (oldest) .. `dNN` (newest), an hour apart: the newest SUCCESS, the others REMOVED."""
    rows = []
    for i in range(count):
        row: dict[str, Any] = {
            "id": f"d{i:02d}",
            "createdAt": (BASE + timedelta(hours=i)).isoformat(),
            "status": "SUCCESS" if i == count - 1 else "REMOVED",
            "meta": {"commitHash": commit(i), "commitMessage": f"c{i}", "branch": "main"},
            "staticUrl": "web-production.up.railway.app",
        }
        row.update(overrides.get(f"d{i:02d}", {}))
        rows.append(row)
    return rows


async def scenario(client: httpx.AsyncClient, url: str, **fields: Any) -> None:
    body = {"token": TOKEN, "service_id": SERVICE, "environment_id": ENVIRONMENT, **fields}
    response = await client.post(f"{url}/_fake/scenario", json=body)
    response.raise_for_status()


async def calls(client: httpx.AsyncClient, url: str, *operations: str) -> list[dict[str, Any]]:
    response = await client.get(f"{url}/_fake/calls")
    response.raise_for_status()
    recorded: list[dict[str, Any]] = response.json()
    return [c for c in recorded if not operations or c["operation"] in operations]


async def fake_state(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await client.get(f"{url}/_fake/state")
    response.raise_for_status()
    state: dict[str, Any] = response.json()
    return state


def provider(
    client: httpx.AsyncClient,
    url: str,
    *,
    token: str = TOKEN,
    service: str = SERVICE,
    page_size: int = 50,
) -> RailwayProvider:
    config = RailwayDeploy(
        provider="railway",
        service_id=service,
        environment_id=ENVIRONMENT,
        token=SecretRef(env="RAILWAY_TOKEN"),
        api_url=f"{url}/graphql/v2",
        timeout_seconds=5,
    )
    return RailwayProvider(config, token, client, page_size=page_size)


async def wait_for(railway: RailwayProvider, to: Deployment, state: str) -> RollbackProgress:
    async def probe() -> RollbackProgress | None:
        progress = await railway.rollback_progress(to)
        return progress if progress.state == state else None

    return await eventually(probe, seconds=5, every=0.05)


def by_id(items: list[Deployment]) -> dict[str, Deployment]:
    return {d.id: d for d in items}


async def test_history_follows_pagination(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(client, fake_url, deployments=deployments(25))

    history = await provider(client, fake_url, page_size=10).history(25)

    assert [d.id for d in history] == [f"d{i:02d}" for i in range(24, -1, -1)]
    pages = [c["variables"] for c in await calls(client, fake_url, "deployments")]
    assert [p["first"] for p in pages] == [10, 10, 5]
    assert pages[0]["after"] is None
    assert pages[1]["after"] and pages[2]["after"] and pages[1]["after"] != pages[2]["after"]
    assert all(p["input"] == {"serviceId": SERVICE, "environmentId": ENVIRONMENT} for p in pages)


async def test_history_stops_at_limit_or_last_page(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    await scenario(client, fake_url, deployments=deployments(25))
    railway = provider(client, fake_url, page_size=10)

    assert len(await railway.history(12)) == 12
    assert len(await railway.history(100)) == 25
    assert len(await calls(client, fake_url, "deployments")) == 2 + 3


async def test_current_is_the_active_deployment(client: httpx.AsyncClient, fake_url: str) -> None:
    rows = deployments(4, d02={"status": "SUCCESS"}, d03={"status": "FAILED"})
    await scenario(client, fake_url, deployments=rows)

    current = await provider(client, fake_url).current()

    assert current.id == "d02"
    assert (current.state, current.raw_state) == ("ready", "SUCCESS")
    assert current.url == "https://web-production.up.railway.app"
    assert (current.commit, current.message) == (commit(2), "c2")
    assert current.created_at == BASE + timedelta(hours=2)
    assert current.good
    (query,) = await calls(client, fake_url, "deployments")
    assert query["variables"]["input"]["status"] == {"in": ["SUCCESS", "SLEEPING"]}


async def test_no_active_deployment_is_final(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(client, fake_url, deployments=deployments(2, d01={"status": "CRASHED"}))

    with pytest.raises(ProviderError) as caught:
        await provider(client, fake_url).current()

    assert caught.value.non_retryable
    assert "no active" in caught.value.message


async def test_states_and_good_flags(client: httpx.AsyncClient, fake_url: str) -> None:
    statuses = [
        "REMOVED",  # d00: served, can be rolled back to
        "REMOVED",  # d01: canRollback false (past retention, or crashed before removal)
        "FAILED",
        "CRASHED",
        "SKIPPED",
        "BUILDING",
        "DEPLOYING",
        "INITIALIZING",
        "QUEUED",
        "WAITING",
        "REMOVING",
        "SLEEPING",  # d11
    ]
    overrides: dict[str, dict[str, Any]] = {
        f"d{i:02d}": {"status": s} for i, s in enumerate(statuses)
    }
    overrides["d01"]["canRollback"] = False
    await scenario(client, fake_url, deployments=deployments(len(statuses), **overrides))

    history = by_id(await provider(client, fake_url).history(20))

    assert {i: d.state for i, d in history.items()} == {
        "d00": "removed",
        "d01": "removed",
        "d02": "failed",
        "d03": "failed",
        "d04": "canceled",
        "d05": "building",
        "d06": "building",
        "d07": "building",
        "d08": "building",
        "d09": "building",
        "d10": "removed",
        "d11": "ready",
    }
    assert history["d03"].raw_state == "CRASHED"
    assert {i for i, d in history.items() if not d.good} == {"d01", "d02", "d03", "d04", "d10"}


async def test_rollback_then_progress_until_succeeded(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    await scenario(
        client,
        fake_url,
        deployments=deployments(3, d02={"healthy": False}),
        switch_after_seconds=0.3,
        on_switch_url="http://127.0.0.1:9/release",  # nothing listens: best effort
    )
    railway = provider(client, fake_url)
    target = by_id(await railway.history(10))["d01"]
    assert target.good

    assert (await railway.rollback_progress(target)).state == "in_progress"
    await railway.rollback(target, key="plan-123")

    assert (await railway.rollback_progress(target)).state == "in_progress"
    progress = await wait_for(railway, target, "succeeded")
    current = await railway.current()
    assert current.id in progress.detail
    # Railway rolls back by deploying the old image again: a new deployment of d01's commit.
    assert current.id not in ("d00", "d01", "d02")
    assert current.commit == commit(1)
    mutations = await calls(client, fake_url, *MUTATIONS)
    assert mutations == [{"operation": "deploymentRollback", "variables": {"id": "d01"}}]
    history = by_id(await railway.history(10))
    assert history["d02"].state == "removed"
    assert not history["d02"].good  # production was rolled back away from it
    assert history["d01"].good and history[current.id].good
    notifications = (await fake_state(client, fake_url))["notifications"]
    assert notifications[0]["payload"] == {"deployment_id": current.id, "good": True}
    assert "error" in notifications[0]


async def test_newer_target_rolls_forward_with_a_redeploy(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    rows = deployments(3, d01={"status": "SUCCESS"}, d02={"status": "REMOVED"})
    await scenario(client, fake_url, deployments=rows, switch_after_seconds=0.1)
    railway = provider(client, fake_url)
    newest = by_id(await railway.history(10))["d02"]

    await railway.rollback(newest, key="plan-9")

    await wait_for(railway, newest, "succeeded")
    assert (await railway.current()).commit == commit(2)
    (mutation,) = await calls(client, fake_url, *MUTATIONS)
    assert mutation == {
        "operation": "deploymentRedeploy",
        "variables": {"id": "d02", "usePreviousImageTag": True},
    }


async def test_rollback_to_current_does_nothing(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(client, fake_url, deployments=deployments(3))
    railway = provider(client, fake_url)
    current = await railway.current()

    await railway.rollback(current, key="k")

    assert (await railway.rollback_progress(current)).state == "succeeded"
    assert not await calls(client, fake_url, *MUTATIONS)


async def test_starting_the_same_rollback_twice_is_harmless(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    await scenario(client, fake_url, deployments=deployments(3), switch_after_seconds=0.4)
    railway = provider(client, fake_url)
    target = by_id(await railway.history(10))["d00"]

    await railway.rollback(target, key="k")
    await railway.rollback(target, key="k")  # a deployment of d00 is still building

    await wait_for(railway, target, "succeeded")
    await railway.rollback(target, key="k")  # and now it serves
    assert len(await calls(client, fake_url, *MUTATIONS)) == 1


async def test_target_railway_cannot_roll_back_to_is_final(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    await scenario(client, fake_url, deployments=deployments(3, d00={"canRollback": False}))
    railway = provider(client, fake_url)
    target = by_id(await railway.history(10))["d00"]
    assert not target.good

    with pytest.raises(ProviderError) as caught:
        await railway.rollback(target, key="k")

    assert caught.value.non_retryable
    assert "canRollback" in caught.value.message
    assert not await calls(client, fake_url, *MUTATIONS)


async def test_failed_rollback_reports_failed(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(
        client,
        fake_url,
        deployments=deployments(3),
        fail_next_rollback=True,
        switch_after_seconds=0.1,
    )
    railway = provider(client, fake_url)
    target = by_id(await railway.history(10))["d00"]

    await railway.rollback(target, key="k")

    progress = await wait_for(railway, target, "failed")
    assert "FAILED" in progress.detail
    assert (await railway.current()).id == "d02"  # the old deployment still serves
    assert by_id(await railway.history(10))["d02"].good  # nothing replaced it


async def test_restart_restarts_the_active_deployment(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    await scenario(client, fake_url, deployments=deployments(2))

    await provider(client, fake_url).restart("plan-7")

    mutations = await calls(client, fake_url, *MUTATIONS)
    assert mutations == [{"operation": "deploymentRestart", "variables": {"id": "d01"}}]
    state = await fake_state(client, fake_url)
    assert state["active"] == "d01"
    assert [d["restarts"] for d in state["deployments"]] == [1, 0]


async def test_wrong_token_is_final_and_names_the_token(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    await scenario(client, fake_url, deployments=deployments(2))

    with pytest.raises(ProviderError) as caught:
        await provider(client, fake_url, token="wrong").current()

    assert caught.value.non_retryable
    assert caught.value.status == 401
    assert "token" in caught.value.message
    assert "Not Authorized" in caught.value.message


async def test_no_credentials_at_all_is_http_401(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(client, fake_url, deployments=deployments(2))

    anonymous = await client.post(
        f"{fake_url}/graphql/v2", json={"query": '{ deployment(id: "d01") { id } }'}
    )

    assert anonymous.status_code == 401
    assert anonymous.json() == {"errors": [{"message": "Not Authorized"}]}


async def test_unknown_service_is_final(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(client, fake_url, deployments=deployments(2))

    with pytest.raises(ProviderError) as caught:
        await provider(client, fake_url, service="svc-nope").history(5)

    assert caught.value.non_retryable
    assert caught.value.status == 404
    assert "Service not found" in caught.value.message
    assert "svc-nope" in caught.value.message


async def test_other_graphql_errors_are_retried(client: httpx.AsyncClient, fake_url: str) -> None:
    rows = deployments(3, d01={"status": "SUCCESS"}, d02={"status": "SKIPPED"})
    await scenario(client, fake_url, deployments=rows)
    railway = provider(client, fake_url)
    skipped = by_id(await railway.history(10))["d02"]

    with pytest.raises(ProviderError) as caught:
        await railway.rollback(skipped, key="k")  # Railway will not redeploy a skipped one

    assert not caught.value.non_retryable
    assert "cannot be redeployed" in caught.value.message


async def test_rate_limit_waits_retry_after(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(
        client, fake_url, deployments=deployments(2), rate_limit_next=1, retry_after_seconds=7
    )
    railway = provider(client, fake_url)

    with pytest.raises(ProviderError) as caught:
        await railway.current()

    assert caught.value.status == 429
    assert not caught.value.non_retryable
    assert caught.value.next_retry_delay == timedelta(seconds=7)
    assert (await railway.current()).id == "d01"  # only the next request was limited


async def test_fake_rate_limit_headers(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(client, fake_url, deployments=deployments(2), rate_limit_next=1)
    query = {"query": '{ deployment(id: "d01") { id status } }'}
    auth = {"Authorization": f"Bearer {TOKEN}"}

    limited = await client.post(f"{fake_url}/graphql/v2", json=query, headers=auth)
    answered = await client.post(f"{fake_url}/graphql/v2", json=query, headers=auth)

    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "2"
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert answered.json() == {"data": {"deployment": {"id": "d01", "status": "SUCCESS"}}}
    for header in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        assert header in answered.headers


async def test_fake_validates_documents_like_a_graphql_server(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    await scenario(client, fake_url, deployments=deployments(2))
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def ask(query: str, variables: dict[str, Any] | None = None) -> httpx.Response:
        body = {"query": query, "variables": variables or {}}
        return await client.post(f"{fake_url}/graphql/v2", json=body, headers=auth)

    scalar = await ask(
        "mutation($id: String!) { deploymentRollback(id: $id) { id } }", {"id": "d00"}
    )
    unknown = await ask('{ deployment(id: "d01") { id bogus } }')
    cursor = await ask('{ deployments(input: {}, after: "nope") { edges { cursor } } }')
    missing = await ask('{ d: deployment(id: "zz") { id } }')

    assert scalar.status_code == 400 and "must not have a selection" in scalar.text
    assert unknown.status_code == 400
    assert (
        unknown.json()["errors"][0]["message"] == 'Cannot query field "bogus" on type "Deployment".'
    )
    assert cursor.status_code == 200 and cursor.json()["errors"][0]["message"] == "Invalid cursor"
    assert missing.json() == {
        "data": None,
        "errors": [
            {
                "message": "Deployment not found",
                "locations": [{"line": 1, "column": 3}],
                "path": ["d"],
            }
        ],
    }
    # The rejected mutation never ran: no deployment was created.
    assert len((await fake_state(client, fake_url))["deployments"]) == 2


async def test_network_error_is_retryable(client: httpx.AsyncClient) -> None:
    closed = f"http://127.0.0.1:{free_port()}"

    with pytest.raises(ProviderError) as caught:
        await provider(client, closed).current()

    assert not caught.value.non_retryable
    assert caught.value.status is None
