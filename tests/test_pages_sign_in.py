"""Attacks on the pages' sign-in, against the service's app in this process and a real OpenID
provider in a thread (tests/oidc_provider.py): every way in must be bound to the browser that
began it, to this client and issuer, and to a configured identity; a provider's group the
config does not map grants nothing; forms carry the session's CSRF token."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from activities import decision_tokens
from activities.config import EngineConfig, load_config
from tests.oidc_provider import (
    CLIENT_ID,
    CLIENT_SECRET_ENV,
    Provider,
    consent_code,
    id_token_from,
    oidc_toml,
    running_provider,
    sub_of,
)
from tests.support import GROUPS, TOKENS, write_config
from workers import oidc
from workers.browser_sessions import COOKIE, issue_session, read_session
from workers.page_auth import safe_next
from workers.service import create_app
from workers.signing import gate_decision
from workflows.models import ExpectedImpact, GateView, Plan

SERVICE = "http://127.0.0.1:8765"
# The test provider (authlib's server, an older interface of it) warns about itself.
pytestmark = pytest.mark.filterwarnings("ignore:get_jwt_config:DeprecationWarning")


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with running_provider() as running:
        yield running


@pytest.fixture(scope="module")
def config_file(provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ[CLIENT_SECRET_ENV] = "client-secret-" + uuid.uuid4().hex
    body = f'[pages]\npublic_url = "{SERVICE}"\n' + oidc_toml(provider.issuer)
    return write_config(tmp_path_factory.mktemp("pages-sign-in"), body)


@pytest.fixture
async def service(config_file: Path) -> AsyncIterator[httpx.AsyncClient]:
    os.environ["REMEDIATE_CONFIG"] = str(config_file)
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url=SERVICE) as http:
        yield http


async def begin(service: httpx.AsyncClient, next_path: str = "/ui/gates") -> httpx.Response:
    started = await service.get("/ui/oidc/login", params={"next": next_path})
    assert started.status_code == 303, started.text
    return started


async def consent(provider_url: str, email: str) -> str:
    """The provider's answer for `email` to the authorization request at `provider_url`:
    the callback URL it sends the browser to."""
    async with httpx.AsyncClient() as http:
        answer = await http.post(provider_url, data={"sub": sub_of(email)})
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


async def sign_in(service: httpx.AsyncClient, email: str) -> httpx.Response:
    started = await begin(service)
    callback = await consent(started.headers["location"], email)
    return await service.get(callback.removeprefix(SERVICE))


async def test_the_authorization_request_uses_pkce_state_and_nonce(
    service: httpx.AsyncClient, provider: Provider
) -> None:
    started = await begin(service)
    query = parse_qs(urlsplit(started.headers["location"]).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"]
    assert query["state"] and query["nonce"] and query["client_id"] == [CLIENT_ID]
    assert query["redirect_uri"] == [f"{SERVICE}/ui/oidc/callback"]
    pending = started.cookies[oidc.PENDING_COOKIE]
    assert query["code_challenge"][0] not in pending  # the verifier travels, not the challenge
    assert "httponly" in started.headers["set-cookie"].lower()


async def test_a_lead_signs_in_with_the_provider_groups_mapped(
    service: httpx.AsyncClient, provider: Provider
) -> None:
    signed_in = await sign_in(service, "bob@example.com")
    assert signed_in.status_code == 303, signed_in.text
    assert signed_in.headers["location"] == "/ui/gates"
    cookies = signed_in.headers.get_list("set-cookie")
    session_cookie = next(c for c in cookies if c.startswith(f"{COOKIE}="))
    assert "httponly" in session_cookie.lower() and "samesite=lax" in session_cookie.lower()
    session = read_session(load_config(), signed_in.cookies[COOKIE])
    assert session.identity == "bob" and session.signed_in_with == "oidc"
    assert session.idp_groups == ("engineering-leads",)
    # The pending sign-in is used once: the answer clears it.
    assert any(c.startswith(f"{oidc.PENDING_COOKIE}=") and "Max-Age=0" in c for c in cookies)


async def test_a_callback_with_another_state_is_refused(
    service: httpx.AsyncClient, provider: Provider
) -> None:
    """A provider's answer to someone else's sign-in (an attacker's code and state, sent to
    the victim in a link: login CSRF) is not for the sign-in this browser began."""
    await begin(service)  # this browser's own sign-in is under way
    attacker = httpx.AsyncClient(transport=service._transport, base_url=SERVICE)
    attackers_start = await begin(attacker)
    forged = await consent(attackers_start.headers["location"], "mallory@example.com")
    answer = await service.get(forged.removeprefix(SERVICE))
    assert answer.status_code == 400
    assert "state does not match" in answer.text
    assert COOKIE not in answer.cookies


async def test_a_callback_without_a_sign_in_under_way_is_refused(
    service: httpx.AsyncClient, provider: Provider
) -> None:
    started = await begin(service)
    callback = await consent(started.headers["location"], "bob@example.com")
    service.cookies.clear()  # another browser, or the pending cookie expired
    answer = await service.get(callback.removeprefix(SERVICE))
    assert answer.status_code == 400 and "no sign-in under way" in answer.text


async def test_a_callback_cannot_be_replayed(
    service: httpx.AsyncClient, provider: Provider
) -> None:
    """Even with the pending cookie captured too, the code was used: the provider refuses it."""
    started = await begin(service)
    pending = started.cookies[oidc.PENDING_COOKIE]
    callback = (await consent(started.headers["location"], "bob@example.com")).removeprefix(SERVICE)
    assert (await service.get(callback)).status_code == 303
    service.cookies.clear()
    service.cookies.set(oidc.PENDING_COOKIE, pending)
    replayed = await service.get(callback)
    assert replayed.status_code == 401 and COOKIE not in replayed.cookies
    assert "refused the sign-in code" in replayed.text


async def test_a_code_without_its_pkce_verifier_is_refused(provider: Provider) -> None:
    """The provider the tests use does enforce PKCE (so the flow above proves the service
    sends the verifier)."""
    location = await consent(
        f"{provider.issuer}/oauth2/authorize?client_id={CLIENT_ID}&response_type=code"
        f"&redirect_uri={SERVICE}/ui/oidc/callback&scope=openid&state=s&nonce=n"
        "&code_challenge=abc&code_challenge_method=S256",
        "bob@example.com",
    )
    async with httpx.AsyncClient(base_url=provider.issuer) as http:
        answer = await http.post(
            "/oauth2/token",
            data={"grant_type": "authorization_code", "code": consent_code(location),
                  "redirect_uri": f"{SERVICE}/ui/oidc/callback", "code_verifier": "wrong"},
            auth=(CLIENT_ID, "x"),
        )  # fmt: skip
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


def oidc_config() -> Any:
    oidc_section = load_config().oidc
    assert oidc_section is not None
    return oidc_section


async def test_an_id_token_from_another_issuer_is_refused(
    config_file: Path, provider: Provider
) -> None:
    """Signed by a key the provider publishes, for this client, but under another issuer."""
    os.environ["REMEDIATE_CONFIG"] = str(config_file)
    token = await id_token_from(provider.other_issuer, "bob@example.com", nonce="n-1")
    with pytest.raises(oidc.SignInRefusedError, match="not valid here") as refused:
        await oidc.verified_id_token(oidc_config(), token, "n-1")
    assert refused.value.status == 401
    # The same token from the configured issuer passes: the issuer is what was refused.
    good = await id_token_from(provider.issuer, "bob@example.com", nonce="n-1")
    assert (await oidc.verified_id_token(oidc_config(), good, "n-1"))["email"] == "bob@example.com"


async def test_an_id_token_for_another_client_is_refused(
    config_file: Path, provider: Provider
) -> None:
    os.environ["REMEDIATE_CONFIG"] = str(config_file)
    token = await id_token_from(provider.issuer, "bob@example.com", client_id="other-app")
    with pytest.raises(oidc.SignInRefusedError, match="not valid here"):
        await oidc.verified_id_token(oidc_config(), token, "n-0")


async def test_an_id_token_for_another_sign_in_is_refused(
    config_file: Path, provider: Provider
) -> None:
    """A token captured from one sign-in, replayed into another (another nonce)."""
    os.environ["REMEDIATE_CONFIG"] = str(config_file)
    token = await id_token_from(provider.issuer, "bob@example.com", nonce="first")
    with pytest.raises(oidc.SignInRefusedError, match="not valid here"):
        await oidc.verified_id_token(oidc_config(), token, "second")


async def test_an_id_token_signed_by_another_key_is_refused(
    config_file: Path, provider: Provider
) -> None:
    os.environ["REMEDIATE_CONFIG"] = str(config_file)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    claims = {
        "iss": provider.issuer, "aud": CLIENT_ID, "sub": sub_of("mallory@example.com"),
        "email": "bob@example.com", "nonce": "n-0", "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
    }  # fmt: skip
    forged = jwt.encode(claims, key, algorithm="RS256")
    with pytest.raises(oidc.SignInRefusedError):
        await oidc.verified_id_token(
            oidc_config(), {"id_token": forged, "access_token": "x", "token_type": "Bearer"}, "n-0"
        )


def test_a_provider_group_the_config_does_not_map_grants_nothing(config_file: Path) -> None:
    """mallory's provider says she is in "engineering-leads", a name [oidc.groups] does not
    map: her session has no approver group, and the decision the service would sign for her
    says so, so the gate refuses it."""
    os.environ["REMEDIATE_CONFIG"] = str(config_file)
    config = load_config()
    person = oidc.person_for(
        oidc_config(), {"email": "mallory@example.com", "groups": ["engineering-leads"]}
    )
    assert person.identity == "mallory" and person.idp_groups == ()
    session = read_session(
        config,
        issue_session(config, "mallory", datetime.now(UTC), signed_in_with="oidc",
                      idp_groups=person.idp_groups),
    )  # fmt: skip
    assert "engineering-leads" not in session.groups
    request = gate_decision(config, "mallory", a_gate(), "approve", groups=session.groups)
    claims = decision_tokens.unverified_claims(request.token)
    assert "engineering-leads" not in claims.groups
    # And a mapped group does grant: alice's provider group "oncall-sre" is the engine's "sre".
    alice = oidc.person_for(oidc_config(), {"email": "alice@example.com", "groups": "oncall-sre"})
    assert alice.idp_groups == ("sre",) and GROUPS["alice"] == ["sre"]


def test_people_the_config_does_not_name_cannot_sign_in(config_file: Path) -> None:
    os.environ["REMEDIATE_CONFIG"] = str(config_file)
    with pytest.raises(oidc.SignInRefusedError, match="no identity is configured") as refused:
        oidc.person_for(oidc_config(), {"email": "stranger@example.com", "groups": []})
    assert refused.value.status == 403
    with pytest.raises(oidc.SignInRefusedError, match="not verified"):
        oidc.person_for(oidc_config(), {"email": "bob@example.com", "email_verified": False})
    with pytest.raises(oidc.SignInRefusedError, match="no 'email' claim"):
        oidc.person_for(oidc_config(), {"sub": "sub-bob"})


async def test_a_stranger_signing_in_is_told_why(
    service: httpx.AsyncClient, provider: Provider
) -> None:
    answer = await sign_in(service, "stranger@example.com")
    assert answer.status_code == 403
    assert "[oidc.identities]" in answer.text and COOKIE not in answer.cookies


async def test_the_token_sign_in_needs_its_form_and_a_right_token(
    service: httpx.AsyncClient,
) -> None:
    page = await service.get("/ui/sign-in", params={"next": "/ui/runs"})
    assert page.status_code == 200 and "Sign in with Example SSO" in page.text
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    wrong = await service.post(
        "/ui/sign-in/token", data={"csrf": csrf, "token": "nope", "next": "/ui/runs"}
    )
    assert wrong.status_code == 401 and "matches no identity" in wrong.text
    page = await service.get("/ui/sign-in")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    forged = await service.post(
        "/ui/sign-in/token", data={"token": TOKENS["mallory"], "next": "/ui/runs"}
    )
    assert forged.status_code == 403 and COOKIE not in forged.cookies
    right = await service.post(
        "/ui/sign-in/token", data={"csrf": csrf, "token": TOKENS["carol"], "next": "/ui/runs"}
    )
    assert right.status_code == 303 and right.headers["location"] == "/ui/runs"
    assert read_session(load_config(), right.cookies[COOKIE]).identity == "carol"


async def test_an_expired_session_is_sent_to_sign_in(service: httpx.AsyncClient) -> None:
    config = load_config()
    old = issue_session(
        config, "bob", datetime.now(UTC) - timedelta(hours=2), ttl=timedelta(hours=1)
    )
    service.cookies.set(COOKIE, old)
    answer = await service.get("/ui/gates/pool_restart-orders-db")
    assert answer.status_code == 303
    assert answer.headers["location"] == (
        "/ui/sign-in?next=%2Fui%2Fgates%2Fpool_restart-orders-db&why=expired"
    )
    page = await service.get(answer.headers["location"])
    assert "Your session has expired: sign in again." in page.text


def test_after_sign_in_the_browser_goes_only_to_a_page_of_ours() -> None:
    assert safe_next("/ui/gates/x") == "/ui/gates/x"
    for elsewhere in ("https://evil.example", "//evil.example/ui/", "/\\evil", "/api", ""):
        assert safe_next(elsewhere) == "/ui/gates"


def test_oidc_config_is_checked(config_file: Path) -> None:
    base = {"issuer": "https://idp.example.com", "client_id": "c", "client_secret": {"env": "X"}}
    with pytest.raises(ValidationError, match="public_url"):
        EngineConfig.model_validate({"oidc": base})
    with pytest.raises(ValidationError, match="no configured identity"):
        EngineConfig.model_validate(
            {"oidc": {**base, "identities": {"a@b": "ghost"}},
             "pages": {"public_url": "https://r.example.com"}}
        )  # fmt: skip
    with pytest.raises(ValidationError, match="openid"):
        EngineConfig.model_validate(
            {"oidc": {**base, "scopes": ["email"]}, "pages": {"public_url": "https://r.ex"}}
        )


def a_gate() -> GateView:
    plan = Plan(
        runbook="read_only",
        action="enter_read_only",
        target="t",
        parameters={},
        expected_impact=ExpectedImpact(summary="s", affected=1),
    )
    now = datetime.now(UTC)
    return GateView(
        workflow_id="read_only-t", runbook="read_only", target="t", requested_by="alice",
        required_group="engineering-leads", plan=plan, opened_at=now,
        abort_at=now + timedelta(minutes=30), run_id="r", gate=1,
    )  # fmt: skip
