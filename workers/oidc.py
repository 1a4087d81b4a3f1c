"""Single sign-on with the team's identity provider: OpenID Connect, authorization code with
PKCE (S256), through authlib's client.

- `start` makes the authorization URL with a fresh `state`, `nonce` and PKCE verifier; the
  three travel in a signed, HttpOnly cookie of their own (`pending_sign_in_cookie`), so any
  process of the service finishes a sign-in another one began, and only the browser that
  began it can finish it.
- `finish` trades the code (with the verifier) for tokens and checks the ID token: the
  provider's signature (its published keys), the configured issuer exactly, this client in
  the audience, the nonce, and the times. The discovery document must name the configured
  issuer too, so a provider cannot pass off another's tokens.
- `person_for` maps the ID token's claims to a configured identity and the engine groups
  the provider's groups stand for (`[oidc] identities`, `[oidc] groups`).

The client secret is a reference, resolved when a sign-in needs it.
"""

from __future__ import annotations

import hmac
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import authlib.deprecate  # noqa: F401  (first: see the import of the Starlette client)
import httpx
import jwt
from authlib.common.errors import AuthlibBaseError
from joserfc.errors import JoseError

# authlib's Starlette client imports its httpx integration, which warns on import that it
# will move to the `httpx2` package: a line on every start of the service that an operator
# can do nothing about (the client works as documented). Silenced for that import only;
# authlib.deprecate, imported above, adds an "always" filter when first imported, which
# would otherwise come before this "ignore".
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.integrations.starlette_client import OAuth, StarletteOAuth2App

from activities import decision_tokens
from activities.approval_auth import signing_key
from activities.config import EngineConfig, OidcConfig
from activities.secrets.references import resolve_secret

CALLBACK_PATH = "/ui/oidc/callback"
PENDING_COOKIE = "remediate_oidc"
PENDING_AUDIENCE = "oidc-sign-in"
# How long a person has between leaving for the provider and coming back.
PENDING_TTL = timedelta(minutes=10)


class SignInRefusedError(Exception):
    """A sign-in that cannot be completed; the message says what to do, `status` fits it."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PendingSignIn:
    """What the callback must match: the request it answers, and where to go after."""

    state: str
    nonce: str
    code_verifier: str
    next_path: str


@dataclass(frozen=True)
class SignedInPerson:
    identity: str
    # The engine groups the provider's group claim maps to ([oidc] groups).
    idp_groups: tuple[str, ...]
    # The claim value that named them (their e-mail, say), for the log.
    claimed_as: str


def callback_url(config: EngineConfig) -> str:
    """The redirect URI registered with the provider: fixed, from `[pages] public_url`."""
    base = config.pages.public_url
    if base is None:  # the config refuses [oidc] without it; this is for the type checker
        raise SignInRefusedError("set [pages] public_url to use single sign-on", 503)
    return base + CALLBACK_PATH


# -- the provider ---------------------------------------------------------------------------

_clients: dict[tuple[str, str, str], StarletteOAuth2App] = {}


def _client(oidc: OidcConfig) -> StarletteOAuth2App:
    """authlib's client for the provider, kept per process (it caches the discovery document
    and the provider's keys, fetching the keys again when a token names an unknown one)."""
    secret = resolve_secret(oidc.client_secret)
    key = (oidc.issuer, oidc.client_id, secret)
    if key not in _clients:
        _clients.clear()  # one provider at a time: a changed config replaces it
        registry = OAuth()
        _clients[key] = registry.register(
            name="idp",
            client_id=oidc.client_id,
            client_secret=secret,
            server_metadata_url=oidc.issuer + "/.well-known/openid-configuration",
            client_kwargs={
                "scope": " ".join(oidc.scopes),
                "code_challenge_method": "S256",
                "timeout": oidc.timeout_seconds,
            },
        )
    return _clients[key]


async def _metadata(oidc: OidcConfig, client: StarletteOAuth2App) -> dict[str, Any]:
    try:
        metadata: dict[str, Any] = await client.load_server_metadata()
    except (httpx.HTTPError, ValueError) as err:
        raise SignInRefusedError(
            f"the identity provider at {oidc.issuer} did not answer its discovery document "
            f"({type(err).__name__}): retry shortly; if it lasts, check [oidc] issuer",
            503,
        ) from None
    if metadata.get("issuer", "").rstrip("/") != oidc.issuer:
        raise SignInRefusedError(
            f"the provider's discovery document names issuer {metadata.get('issuer')!r}, not "
            f"{oidc.issuer!r}: set [oidc] issuer to exactly what the provider says",
            503,
        )
    return metadata


async def start(config: EngineConfig, oidc: OidcConfig, next_path: str) -> tuple[str, str]:
    """(the provider's authorization URL to send the browser to, the pending-sign-in cookie)."""
    client = _client(oidc)
    await _metadata(oidc, client)
    try:
        made = await client.create_authorization_url(callback_url(config))
    except (httpx.HTTPError, AuthlibBaseError, RuntimeError) as err:
        raise SignInRefusedError(f"cannot start the sign-in: {err}", 503) from None
    pending = PendingSignIn(
        state=made["state"],
        nonce=made["nonce"],
        code_verifier=made["code_verifier"],
        next_path=next_path,
    )
    return str(made["url"]), pending_sign_in_cookie(config, pending, datetime.now(UTC))


async def finish(
    config: EngineConfig, oidc: OidcConfig, pending: PendingSignIn, code: str
) -> dict[str, Any]:
    """The ID token's claims, once the code is traded and the token checked."""
    client = _client(oidc)
    await _metadata(oidc, client)
    try:
        token = await client.fetch_access_token(
            callback_url(config), code=code, code_verifier=pending.code_verifier
        )
    except httpx.HTTPError as err:
        raise SignInRefusedError(
            f"the identity provider did not answer the code exchange ({type(err).__name__}): "
            "sign in again shortly",
            503,
        ) from None
    except AuthlibBaseError as err:
        raise SignInRefusedError(
            f"the identity provider refused the sign-in code ({err}): sign in again", 401
        ) from None
    return await verified_id_token(oidc, token, pending.nonce)


async def verified_id_token(
    oidc: OidcConfig, token: Mapping[str, Any], nonce: str
) -> dict[str, Any]:
    """The claims of the token response's ID token, if the provider signed it for this client,
    under the configured issuer, for this sign-in (nonce), and it is current."""
    if "id_token" not in token:
        raise SignInRefusedError(
            "the provider answered without an ID token: check that [oidc] scopes include "
            '"openid" and the client is an OpenID Connect client',
            401,
        )
    client = _client(oidc)
    await _metadata(oidc, client)
    options = {
        "iss": {"essential": True, "value": oidc.issuer},
        "aud": {"essential": True, "value": oidc.client_id},
        "sub": {"essential": True},
    }
    try:
        claims = dict(await client.parse_id_token(dict(token), nonce, claims_options=options))
    except (JoseError, AuthlibBaseError, ValueError) as err:
        raise SignInRefusedError(f"the ID token is not valid here ({_why(err)})", 401) from None
    except httpx.HTTPError as err:
        raise SignInRefusedError(
            f"the provider's keys could not be read ({type(err).__name__}): retry shortly", 503
        ) from None
    # authlib checked these; checked again here, where the rule is written down.
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if claims.get("iss") != oidc.issuer or oidc.client_id not in audiences:
        raise SignInRefusedError("the ID token is for another issuer or client", 401)
    if not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
        raise SignInRefusedError("the ID token answers another sign-in (nonce)", 401)
    return claims


def _why(err: Exception) -> str:
    text = str(err) or type(err).__name__
    return text.splitlines()[0][:200]


# -- who signed in --------------------------------------------------------------------------


def person_for(oidc: OidcConfig, claims: Mapping[str, Any]) -> SignedInPerson:
    """The configured identity the ID token names, and the engine groups it brings."""
    claimed = claims.get(oidc.identity_claim)
    if not isinstance(claimed, str) or not claimed:
        raise SignInRefusedError(
            f"the ID token has no {oidc.identity_claim!r} claim: ask the provider's admin to "
            f"release it to this client, or set [oidc] identity_claim",
            403,
        )
    if oidc.identity_claim == "email" and claims.get("email_verified") is False:
        raise SignInRefusedError(
            f"the provider has not verified the e-mail {claimed}: verify it there first", 403
        )
    identity = oidc.identities.get(claimed)
    if identity is None:
        raise SignInRefusedError(
            f"{claimed} signed in, but no identity is configured for it: an admin adds "
            f'"{claimed}" = "<identity>" under [oidc.identities]',
            403,
        )
    raw_groups = claims.get(oidc.groups_claim, [])
    provider_groups = [raw_groups] if isinstance(raw_groups, str) else raw_groups
    if not isinstance(provider_groups, list):
        provider_groups = []
    mapped = {oidc.groups[g] for g in provider_groups if isinstance(g, str) and g in oidc.groups}
    return SignedInPerson(identity=identity, idp_groups=tuple(sorted(mapped)), claimed_as=claimed)


# -- the pending sign-in, in the browser ------------------------------------------------------


def pending_sign_in_cookie(config: EngineConfig, pending: PendingSignIn, now: datetime) -> str:
    claims = {
        "iss": decision_tokens.ISSUER,
        "aud": PENDING_AUDIENCE,
        "state": pending.state,
        "nonce": pending.nonce,
        "cv": pending.code_verifier,
        "next": pending.next_path,
        "iat": int(now.timestamp()),
        "exp": int((now + PENDING_TTL).timestamp()),
    }
    return jwt.encode(claims, signing_key(config), algorithm=decision_tokens.ALGORITHM)


def pending_sign_in(config: EngineConfig, cookie: str | None, state: str) -> PendingSignIn:
    """The sign-in this browser began, if `state` is the one it was sent with."""
    if not cookie:
        raise SignInRefusedError(
            "this browser has no sign-in under way (it took over 10 minutes, or cookies are "
            "blocked): start the sign-in again",
            400,
        )
    try:
        claims = jwt.decode(
            cookie,
            signing_key(config).public_key(),
            algorithms=[decision_tokens.ALGORITHM],
            audience=PENDING_AUDIENCE,
            issuer=decision_tokens.ISSUER,
            options={"require": ["exp", "state", "nonce", "cv"]},
        )
    except jwt.ExpiredSignatureError:
        raise SignInRefusedError("the sign-in took over 10 minutes: start it again", 400) from None
    except jwt.InvalidTokenError:
        raise SignInRefusedError("the sign-in cookie is not valid: start again", 400) from None
    if not state or not hmac.compare_digest(str(claims["state"]), state):
        raise SignInRefusedError(
            "the answer from the identity provider is not for the sign-in this browser began "
            "(state does not match): start the sign-in again",
            400,
        )
    return PendingSignIn(
        state=str(claims["state"]),
        nonce=str(claims["nonce"]),
        code_verifier=str(claims["cv"]),
        next_path=str(claims.get("next", "/ui/gates")),
    )
