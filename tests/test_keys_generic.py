"""The generic HTTP key provider against the local fake key service, served by a real HTTP
server; plus the secret-handling guarantees (no value in reprs, errors or the fake's log)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.config import SecretRef
from activities.http.errors import ProviderError
from activities.keys.config import GenericKeyProviderConfig
from activities.keys.generic import GenericKeyProvider
from activities.keys.models import ApiKey, CreatedKey, KeyProvider, KeyProviderError
from infra.local_postgres import free_port
from infra.processes import server_process

ADMIN = "admin-token-ok-9f2c"
FORBIDDEN = "admin-token-read-only-77aa"
BASE = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "infra.fakes.key_service", "--port", str(port)]
    with server_process(command, port, quiet=True):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def existing(count: int, revoked: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    """`key_00` (oldest) .. `key_NN`, an hour apart, with values `sk_live_old_NN...`."""
    return [
        {
            "id": f"key_{i:02d}",
            "value": f"sk_live_old_{i:02d}_" + "5e" * 12,
            "created_at": (BASE + timedelta(hours=i)).isoformat(),
            "state": "revoked" if i in revoked else "active",
            "name": f"old-{i}",
        }
        for i in range(count)
    ]


async def scenario(client: httpx.AsyncClient, url: str, **fields: Any) -> None:
    body = {"admin_token": ADMIN, "forbidden_tokens": [FORBIDDEN], **fields}
    response = await client.post(f"{url}/_fake/scenario", json=body)
    response.raise_for_status()


async def calls(client: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    response = await client.get(f"{url}/_fake/calls")
    response.raise_for_status()
    recorded: list[dict[str, Any]] = response.json()
    return recorded


async def fake_state(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await client.get(f"{url}/_fake/state")
    response.raise_for_status()
    state: dict[str, Any] = response.json()
    return state


def config(url: str, **overrides: Any) -> GenericKeyProviderConfig:
    fields: dict[str, Any] = {
        "provider": "generic",
        "create_url": f"{url}/v1/keys",
        "list_url": f"{url}/v1/keys",
        "revoke_url": f"{url}/v1/keys/{{id}}/revoke",
        "verify_url": f"{url}/v1/verify",
        "admin_token": {"env": "KEYS_ADMIN_TOKEN"},
        "timeout_seconds": 5,
        **overrides,
    }
    return GenericKeyProviderConfig.model_validate(fields)


def provider(client: httpx.AsyncClient, url: str, *, token: str = ADMIN) -> GenericKeyProvider:
    return GenericKeyProvider(config(url), token, client)


# -- listing -------------------------------------------------------------------------------


async def test_list_follows_pagination(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(client, fake_url, keys=existing(5, revoked=(1,)), page_size=2)
    keys: KeyProvider = provider(client, fake_url)

    listed = await keys.list_keys()

    assert [k.id for k in listed] == [f"key_{i:02d}" for i in range(5)]
    assert [k.state for k in listed] == ["active", "revoked", "active", "active", "active"]
    assert listed[0].last4 == "5e5e" and listed[0].name == "old-0"
    assert listed[0].created_at == BASE
    pages = [c["query"] for c in await calls(client, fake_url)]
    assert pages == [
        {"limit": "100"},
        {"limit": "100", "cursor": "2"},
        {"limit": "100", "cursor": "4"},
    ]


async def test_get_key_finds_a_key_or_none(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(client, fake_url, keys=existing(5, revoked=(4,)), page_size=2)
    keys = provider(client, fake_url)

    found = await keys.get_key("key_04")

    assert found is not None and found.id == "key_04" and found.state == "revoked"
    assert await keys.get_key("key_nope") is None


# -- create ---------------------------------------------------------------------------------


async def test_create_returns_a_working_key_once_per_idempotency_key(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    await scenario(client, fake_url, keys=existing(1))
    keys = provider(client, fake_url)

    created = await keys.create_key("rotation-42", "rotate-42-create")
    again = await keys.create_key("rotation-42", "rotate-42-create")

    value = created.value.get_secret_value()
    assert value.startswith("sk_live_")
    assert created.key.id.startswith("key_") and created.key.state == "active"
    assert created.key.name == "remediate-rotation-42"
    assert created.key.last4 == value[-4:]
    assert await keys.key_works(value)
    assert again.key.id == created.key.id
    assert again.value.get_secret_value() == value
    state = await fake_state(client, fake_url)
    assert [k["id"] for k in state["keys"]] == ["key_00", created.key.id]
    creates = [c for c in await calls(client, fake_url) if c["method"] == "POST"]
    assert [(c["idempotency_key"], c["status"]) for c in creates] == [
        ("rotate-42-create", 201),
        ("rotate-42-create", 200),
    ]
    # A different idempotency key is a different key.
    other = await keys.create_key("rotation-43", "rotate-43-create")
    assert other.key.id != created.key.id


async def test_a_lost_create_answer_is_retried_into_the_same_key(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    await scenario(client, fake_url, lose_next_create=True)
    keys = provider(client, fake_url)

    with pytest.raises(KeyProviderError) as caught:
        await keys.create_key("rotation-7", "rotate-7-create")
    assert caught.value.status == 500 and not caught.value.non_retryable
    created = await keys.create_key("rotation-7", "rotate-7-create")

    state = await fake_state(client, fake_url)
    assert [k["id"] for k in state["keys"]] == [created.key.id]
    assert await keys.key_works(created.value.get_secret_value())


async def test_a_500_on_create_is_retryable(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(client, fake_url, fail_next_create=True)
    keys = provider(client, fake_url)

    with pytest.raises(KeyProviderError) as caught:
        await keys.create_key("rotation-8", "rotate-8-create")

    assert isinstance(caught.value, ProviderError)
    assert caught.value.status == 500
    assert not caught.value.non_retryable
    assert caught.value.type == "KeyProviderError"
    assert "HTTP 500" in caught.value.message
    assert (await fake_state(client, fake_url))["keys"] == []
    created = await keys.create_key("rotation-8", "rotate-8-create")
    assert await keys.key_works(created.value.get_secret_value())


# -- revoke and verify ---------------------------------------------------------------------


async def test_revoke_stops_the_key_and_is_idempotent(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    await scenario(client, fake_url, keys=existing(1))
    keys = provider(client, fake_url)
    created = await keys.create_key("rotation-9", "rotate-9-create")
    value = created.value.get_secret_value()
    assert await keys.key_works(value)

    await keys.revoke_key(created.key.id)
    await keys.revoke_key(created.key.id)

    assert not await keys.key_works(value)
    revoked = await keys.get_key(created.key.id)
    assert revoked is not None and revoked.state == "revoked"
    old = await keys.get_key("key_00")
    assert old is not None and old.state == "active"
    verifies = [c for c in await calls(client, fake_url) if c["path"] == "/v1/verify"]
    assert [(c["auth"], c["status"]) for c in verifies] == [
        (created.key.id, 200),
        (created.key.id, 401),
    ]


async def test_an_unknown_key_never_works(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(client, fake_url, keys=existing(1))

    assert not await provider(client, fake_url).key_works("sk_live_never_issued")
    assert await provider(client, fake_url).key_works(existing(1)[0]["value"])


async def test_revoking_an_unknown_key_is_final(client: httpx.AsyncClient, fake_url: str) -> None:
    await scenario(client, fake_url, keys=existing(1))

    with pytest.raises(KeyProviderError) as caught:
        await provider(client, fake_url).revoke_key("key_missing")

    assert caught.value.status == 404
    assert caught.value.non_retryable
    assert "key_missing" in caught.value.message
    assert "revoke_url" in caught.value.message


# -- errors ----------------------------------------------------------------------------------


async def test_wrong_admin_token_is_final_and_says_what_to_fix(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    await scenario(client, fake_url, keys=existing(1))

    with pytest.raises(KeyProviderError) as caught:
        await provider(client, fake_url, token="not-the-admin-token").create_key("r", "k1")

    assert caught.value.status == 401
    assert caught.value.non_retryable
    message = caught.value.message
    assert "401 unauthorized" in message
    assert "check the token reference in the key provider config" in message
    assert "not-the-admin-token" not in message
    assert len((await fake_state(client, fake_url))["keys"]) == 1


async def test_forbidden_admin_token_is_final_and_says_what_to_fix(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    await scenario(client, fake_url, keys=existing(1))
    keys = provider(client, fake_url, token=FORBIDDEN)

    with pytest.raises(KeyProviderError) as caught:
        await keys.revoke_key("key_00")

    assert caught.value.status == 403
    assert caught.value.non_retryable
    message = caught.value.message
    assert "403 forbidden" in message and "revoke key key_00" in message
    assert "admin_token" in message and "permission to manage API keys" in message
    assert FORBIDDEN not in message
    with pytest.raises(KeyProviderError) as listing:
        await keys.list_keys()
    assert listing.value.status == 403 and listing.value.non_retryable


async def test_rate_limit_is_retryable_after_retry_after(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    await scenario(
        client, fake_url, keys=existing(3), page_size=2, rate_limit_next=2, retry_after_seconds=7
    )
    keys = provider(client, fake_url)

    with pytest.raises(KeyProviderError) as listing:
        await keys.list_keys()
    with pytest.raises(KeyProviderError) as verifying:
        await keys.key_works(existing(1)[0]["value"])

    for caught in (listing, verifying):
        assert caught.value.status == 429
        assert not caught.value.non_retryable
        assert caught.value.next_retry_delay == timedelta(seconds=7)
        assert "retry after 7s" in caught.value.message
    assert (await fake_state(client, fake_url))["rate_limit_left"] == 0
    assert len(await keys.list_keys()) == 3


# -- secrets ---------------------------------------------------------------------------------


async def test_no_secret_value_in_reprs_errors_or_the_fake_log(
    client: httpx.AsyncClient, fake_url: str
) -> None:
    await scenario(client, fake_url, keys=existing(2))
    keys = provider(client, fake_url)
    created = await keys.create_key("rotation-10", "rotate-10-create")
    value = created.value.get_secret_value()
    old_value = existing(1)[0]["value"]
    await keys.key_works(value)
    await keys.key_works(old_value)
    await keys.revoke_key(created.key.id)
    errors: list[BaseException] = []
    for attempt in (
        provider(client, fake_url, token="wrong-admin-token").list_keys(),
        provider(client, fake_url, token=FORBIDDEN).create_key("x", "k-x"),
        keys.revoke_key("key_missing"),
    ):
        with pytest.raises(KeyProviderError) as caught:
            await attempt
        errors.append(caught.value)

    shown = [repr(created), str(created), repr(created.key), created.key.describe()]
    shown += [str(e) for e in errors] + [repr(e) for e in errors]
    shown.append(repr(keys))
    for text in shown:
        for secret in (value, old_value, ADMIN, FORBIDDEN):
            assert secret not in text, text
    assert f"…{value[-4:]}" in created.key.describe()
    log = (await client.get(f"{fake_url}/_fake/calls")).text
    state = (await client.get(f"{fake_url}/_fake/state")).text
    for secret in (value, old_value, ADMIN, FORBIDDEN, "wrong-admin-token"):
        assert secret not in log
        assert secret not in state


def test_a_created_key_cannot_become_a_temporal_payload() -> None:
    key = ApiKey(id="key_1", created_at=BASE, state="active", last4="abcd")
    created = CreatedKey(key=key, value=SecretStr("sk_live_topsecret_abcd"))

    with pytest.raises(Exception) as caught:
        pydantic_data_converter.payload_converter.to_payloads([created])

    assert "sk_live_topsecret" not in str(caught.value)
    # Its metadata can.
    assert pydantic_data_converter.payload_converter.to_payloads([key])


@asynccontextmanager
async def transport_provider(handler: Any) -> AsyncIterator[GenericKeyProvider]:
    """A provider over an in-process transport, for answers the fake never gives."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        yield GenericKeyProvider(config("http://keys.example"), ADMIN, client)


async def test_an_echoed_secret_is_scrubbed_from_errors() -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text=f"bad gateway for {request.headers['Authorization']}")

    async with transport_provider(echo) as keys:
        with pytest.raises(KeyProviderError) as verifying:
            await keys.key_works("sk_live_echoed_1234")
        with pytest.raises(KeyProviderError) as listing:
            await keys.list_keys()

    assert "sk_live_echoed" not in verifying.value.message
    assert ADMIN not in listing.value.message
    assert "[redacted]" in verifying.value.message
    assert not verifying.value.non_retryable


async def test_a_malformed_create_answer_does_not_echo_the_value() -> None:
    def created(request: httpx.Request) -> httpx.Response:
        body = {"id": "key_1", "key": "sk_live_malformed_9999", "created_at": "yesterday"}
        return httpx.Response(201, json=body)

    async with transport_provider(created) as keys:
        with pytest.raises(KeyProviderError) as caught:
            await keys.create_key("r", "k")

    assert "created_at" in caught.value.message
    assert "sk_live_malformed" not in caught.value.message
    assert caught.value.non_retryable


async def test_a_repeating_cursor_is_reported_not_looped() -> None:
    def page(request: httpx.Request) -> httpx.Response:
        item = {"id": "key_1", "created_at": BASE.isoformat(), "state": "active"}
        return httpx.Response(200, json={"data": [item], "next_cursor": "same"})

    async with transport_provider(page) as keys:
        with pytest.raises(KeyProviderError) as caught:
            await keys.list_keys()

    assert "came back twice" in caught.value.message


# -- models and config ---------------------------------------------------------------------


def test_describe_shows_id_last4_creation_and_state() -> None:
    key = ApiKey(
        id="key_123",
        created_at=datetime(2026, 11, 20, 12, 0, tzinfo=timezone(timedelta(hours=1))),
        state="active",
        last4="abcd",
    )
    assert key.describe() == "key_123 (…abcd, created 2026-11-20 11:00 UTC, active)"
    bare = ApiKey(id="key_9", created_at=BASE, state="revoked")
    assert bare.describe() == "key_9 (created 2026-01-01 00:00 UTC, revoked)"
    assert ApiKey(id="k", created_at=BASE, state="active", last4="sk_live_whole").last4 == "hole"


def test_config_checks_the_revoke_template_and_urls() -> None:
    good = config("https://keys.example")
    assert good.revoke_url_for("key_1") == "https://keys.example/v1/keys/key_1/revoke"
    assert good.admin_token == SecretRef(env="KEYS_ADMIN_TOKEN")
    for bad in (
        {"revoke_url": "https://keys.example/v1/keys/revoke"},
        {"revoke_url": "https://keys.example/v1/keys/{key}/revoke"},
        {"revoke_url": "https://keys.example/v1/keys/{id}/{other}"},
        {"revoke_url": "https://keys.example/v1/keys/{id!r}/revoke"},
        {"create_url": "keys.example/v1/keys"},
        {"timeout_seconds": 0},
        {"extra_field": True},
    ):
        with pytest.raises(ValidationError):
            config("https://keys.example", **bad)
