"""A real OpenID provider for the pages' single sign-on tests: oidc-provider-mock (authlib's
authorization server in Flask) in a thread, with people whose ID tokens carry an e-mail and a
group claim, and PKCE enforced in front of it (the mock accepts a code without its verifier;
a real provider configured for public-grade clients does not).

Its issuer is `http://localhost:<port>` while the service is at 127.0.0.1: two sites, so the
browser's cookies behave as with a real provider on another domain. The same server reached
as 127.0.0.1 issues tokens under another issuer, signed by the same key: what an attacker with
a token from another tenant of a shared provider would hold.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import oidc_provider_mock
import werkzeug.serving

# The people the provider knows: e-mail -> their groups there.
PEOPLE = {
    "bob@example.com": ["oncall-leads"],
    "alice@example.com": ["oncall-sre"],
    # Claims a group named like the engine's approver group, which [oidc.groups] does not map.
    "mallory@example.com": ["engineering-leads"],
    "stranger@example.com": ["oncall-leads"],  # no identity is configured for them
}
CLIENT_ID = "remediate-pages"
CLIENT_SECRET_ENV = "PAGES_OIDC_CLIENT_SECRET"

StartResponse = Callable[..., Any]
Environ = dict[str, Any]


def oidc_toml(issuer: str) -> str:
    identities = "\n".join(f'"{email}" = "{email.split("@")[0]}"' for email in PEOPLE)
    identities = "\n".join(
        line for line in identities.splitlines() if not line.startswith('"stranger')
    )
    return f"""
[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = {{ env = "{CLIENT_SECRET_ENV}" }}
display_name = "Example SSO"

[oidc.identities]
{identities}

[oidc.groups]
"oncall-leads" = "engineering-leads"
"oncall-sre" = "sre"
"""


class PkceEnforced:
    """WSGI middleware: an authorization request needs an S256 `code_challenge`, and its code
    is exchanged only with the matching `code_verifier`."""

    def __init__(self, app: Callable[[Environ, StartResponse], Iterable[bytes]]) -> None:
        self.app = app
        self.challenges: dict[str, str] = {}
        self.lock = threading.Lock()
        self.refused: list[str] = []

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if path == "/oauth2/authorize" and method == "POST":
            return self._authorize(environ, start_response)
        if path == "/oauth2/token":
            return self._token(environ, start_response)
        return self.app(environ, start_response)

    def _authorize(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        challenge = query.get("code_challenge", [""])[0]
        if not challenge or query.get("code_challenge_method") != ["S256"]:
            return self._refuse(start_response, "invalid_request", "PKCE S256 is required")

        def remember(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            location = dict(headers).get("Location", "")
            code = parse_qs(urlsplit(location).query).get("code", [""])[0]
            if code:
                with self.lock:
                    self.challenges[code] = challenge
            return start_response(status, headers, *rest)

        return self.app(environ, remember)

    def _token(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        form = parse_qs(body.decode())
        if form.get("grant_type") == ["authorization_code"]:
            code = form.get("code", [""])[0]
            verifier = form.get("code_verifier", [""])[0]
            with self.lock:
                challenge = self.challenges.pop(code, None)
            if challenge is None or s256(verifier) != challenge:
                return self._refuse(start_response, "invalid_grant", "PKCE verification failed")
        return self.app(environ, start_response)

    def _refuse(self, start_response: StartResponse, error: str, why: str) -> Iterable[bytes]:
        self.refused.append(why)
        body = json.dumps({"error": error, "error_description": why}).encode()
        start_response("400 Bad Request", [("Content-Type", "application/json")])
        return [body]


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass
class Provider:
    port: int
    pkce: PkceEnforced

    @property
    def issuer(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def other_issuer(self) -> str:
        """The same server and key under another name: its tokens name another issuer."""
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def running_provider() -> Iterator[Provider]:
    users = [
        oidc_provider_mock.User(
            sub=f"sub-{email.split('@')[0]}",
            claims={"email": email, "email_verified": True, "groups": groups},
        )
        for email, groups in PEOPLE.items()
    ]
    pkce = PkceEnforced(oidc_provider_mock.app(require_nonce=True, user_claims=users))
    server = werkzeug.serving.make_server("127.0.0.1", 0, pkce, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield Provider(server.server_port, pkce)
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


def sub_of(email: str) -> str:
    return f"sub-{email.split('@')[0]}"


async def id_token_from(
    issuer: str, email: str, *, client_id: str = CLIENT_ID, nonce: str = "n-0"
) -> dict[str, Any]:
    """A token response for `email`, by the authorization code flow a client runs (the
    provider's consent form posted by hand), for `client_id` under `issuer`."""
    verifier = secrets.token_urlsafe(48)
    redirect_uri = "http://127.0.0.1:1/ui/oidc/callback"
    query = urlencode(
        {
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": "openid email",
            "state": "s-0",
            "nonce": nonce,
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
        }
    )
    async with httpx.AsyncClient(base_url=issuer) as http:
        consent = await http.post(f"/oauth2/authorize?{query}", data={"sub": sub_of(email)})
        assert consent.status_code == 302, consent.text
        code = parse_qs(urlsplit(consent.headers["location"]).query)["code"][0]
        answer = await http.post(
            "/oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            },
            auth=(client_id, "any-secret"),
        )
        assert answer.status_code == 200, answer.text
        token: dict[str, Any] = answer.json()
        return token


def consent_code(location: str) -> str:
    match = re.search(r"[?&]code=([^&]+)", location)
    assert match, location
    return match.group(1)
