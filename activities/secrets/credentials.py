"""What a rotatable credential is, per kind: who it names, how a new one is made, set, tested
and revoked. The Temporal activities (`activities/keys/rotation.py`) drive these through
Secrets Manager's rotation protocol and never see a kind's details.

Values are plain strings here (the secret's `SecretString`) and stay inside the activity.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
from temporalio.exceptions import ApplicationError

from activities.config import (
    ApiKeyCredential,
    CredentialConfig,
    PostgresCredential,
    load_config,
)
from activities.keys.generic import GenericKeyProvider
from activities.postgres import logins as pg
from activities.secrets.models import AuditResult, RevokeResult, StepResult
from activities.secrets.references import resolve_secret


class Credential(Protocol):
    type: str
    strategy: str

    async def principal(self, value: str) -> str: ...

    def next_principal(self, current: str) -> str: ...

    async def new_value(self, current: str, token: str) -> str: ...

    async def set_on_target(self, value: str) -> StepResult: ...

    async def works(self, value: str) -> bool: ...

    async def sessions(self, value: str) -> int: ...

    async def revoke(self, value: str, current: str, compromised: bool) -> RevokeResult: ...

    async def audit(self, revoked: str, current: str) -> AuditResult: ...


def config_error(message: str) -> ApplicationError:
    return ApplicationError(message, type="ConfigError", non_retryable=True)


def credential_config(target: str) -> CredentialConfig:
    config = load_config().target(target)
    if config.credential is None:
        raise config_error(
            f"target {target!r} is a {config.kind} target, not a credential: key_rotation "
            'rotates targets of kind = "secret" with a [credential] section'
        )
    return config.credential


@asynccontextmanager
async def credential_for(target: str) -> AsyncIterator[tuple[CredentialConfig, Credential]]:
    config = credential_config(target)
    source = config.source
    if isinstance(source, PostgresCredential):
        yield config, PostgresLogin(config.secret_arn, source)
        return
    assert isinstance(source, ApiKeyCredential)
    provider = source.provider
    async with httpx.AsyncClient(timeout=provider.timeout_seconds) as client:
        admin_token = resolve_secret(provider.admin_token)
        yield (
            config,
            ApiKeyLogin(
                config.secret_arn, target, GenericKeyProvider(provider, admin_token, client)
            ),
        )


class PostgresLogin:
    """A Postgres role's password (see `postgres_login.py` for the secret's shape)."""

    type = "postgres"

    def __init__(self, arn: str, config: PostgresCredential) -> None:
        self.arn, self.config = arn, config
        self.strategy: str = config.strategy
        self.password_bytes = load_config().runbooks.key_rotation.password_bytes

    def _admin_dsn(self) -> str:
        database = load_config().target(self.config.database)
        assert database.dsn is not None  # the config requires it of a postgres target
        return resolve_secret(database.dsn)

    async def principal(self, value: str) -> str:
        username = str(pg.parse(value, self.arn)["username"])
        if username not in self.config.users:
            raise config_error(
                f"{self.arn} names login {username!r}, which is not one of the credential's "
                f"users {self.config.users}: fix `users` or the secret"
            )
        return username

    def next_principal(self, current: str) -> str:
        username = str(pg.parse(current, self.arn)["username"])
        others = [u for u in self.config.users if u != username]
        return others[0] if others else username

    async def new_value(self, current: str, token: str) -> str:
        data = pg.parse(current, self.arn)
        password = secrets.token_urlsafe(self.password_bytes)
        return pg.with_login(data, self.next_principal(current), password)

    async def set_on_target(self, value: str) -> StepResult:
        data = pg.parse(value, self.arn)
        user = str(data["username"])
        if await pg.login_works(data):
            return StepResult(acted=False, detail=f"{user} already logs in with this version")
        async with await pg.admin(self._admin_dsn()) as conn:
            await pg.require_roles(conn, self.config.users)
            await pg.set_password(conn, user, str(data["password"]))
        return StepResult(acted=True, detail=f"new password set on role {user}")

    async def works(self, value: str) -> bool:
        return await pg.login_works(pg.parse(value, self.arn))

    async def sessions(self, value: str) -> int:
        user = str(pg.parse(value, self.arn)["username"])
        async with await pg.admin(self._admin_dsn()) as conn:
            return len(await pg.sessions_of(conn, user))

    async def revoke(self, value: str, current: str, compromised: bool) -> RevokeResult:
        data = pg.parse(value, self.arn)
        user = str(data["username"])
        acted, terminated = False, 0
        async with await pg.admin(self._admin_dsn()) as conn:
            if await pg.login_works(data):
                if not compromised and user == pg.parse(current, self.arn)["username"]:
                    raise ApplicationError(
                        f"refusing to remove the password of {user}: the current version logs "
                        "in as the same role, and it would stop working too",
                        non_retryable=True,
                    )
                await pg.remove_password(conn, user)
                acted = True
            # Listed after the password is gone, so no session can open after the list.
            sessions = await pg.sessions_of(conn, user)
            if compromised:
                terminated = await pg.terminate(conn, [s.pid for s in sessions])
        return RevokeResult(
            version_id="",
            principal=user,
            acted=acted,
            sessions=sessions,
            terminated=terminated,
            rejected=not await pg.login_works(data),
            verified_at=datetime.now(UTC),
        )

    async def audit(self, revoked: str, current: str) -> AuditResult:
        old = str(pg.parse(revoked, self.arn)["username"])
        new = str(pg.parse(current, self.arn)["username"])
        async with await pg.admin(self._admin_dsn()) as conn:
            left = await pg.sessions_of(conn, old) if old != new else []
        findings = [
            f"the revoked login ({old}) is refused"
            if not await self.works(revoked)
            else f"the revoked login ({old}) STILL logs in",
            f"the current login ({new}) "
            + ("logs in" if await self.works(current) else "is REFUSED"),
        ]
        warnings = [
            f"{len(left)} session(s) still open as {old}, opened before the revoke: "
            + "; ".join(s.describe() for s in left)
        ] if left else []  # fmt: skip
        return AuditResult(findings=findings, warnings=warnings)


class ApiKeyLogin:
    """A third-party API key; the secret holds `{"api_key": <value>, "key_id": <id>}`."""

    type = "api_key"
    strategy = "new_key"

    def __init__(self, arn: str, target: str, provider: GenericKeyProvider) -> None:
        self.arn, self.target, self.provider = arn, target, provider

    def _parse(self, value: str) -> dict[str, Any]:
        try:
            data = json.loads(value)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not data.get("api_key") or not data.get("key_id"):
            raise config_error(
                f'{self.arn} is not an API key credential: it needs JSON {{"api_key": <the key>, '
                '"key_id": <its id at the vendor>}'
            )
        return data

    async def principal(self, value: str) -> str:
        key_id = str(self._parse(value)["key_id"])
        key = await self.provider.get_key(key_id)
        return key.describe() if key is not None else f"{key_id} (unknown to the vendor)"

    def next_principal(self, current: str) -> str:
        return "a new key"

    async def new_value(self, current: str, token: str) -> str:
        data = self._parse(current)
        # The token is the idempotency key: a retry whose first answer was lost gets the same
        # key back, never a second one.
        created = await self.provider.create_key(f"{self.target}-{token[:12]}", token)
        value = created.value.get_secret_value()
        return json.dumps({**data, "api_key": value, "key_id": created.key.id})

    async def set_on_target(self, value: str) -> StepResult:
        return StepResult(acted=False, detail="the vendor activated the key when creating it")

    async def works(self, value: str) -> bool:
        return await self.provider.key_works(str(self._parse(value)["api_key"]))

    async def sessions(self, value: str) -> int:
        return 0

    async def revoke(self, value: str, current: str, compromised: bool) -> RevokeResult:
        data = self._parse(value)
        key_id = str(data["key_id"])
        if not compromised and key_id == self._parse(current)["key_id"]:
            raise ApplicationError(
                f"refusing to revoke {key_id}: it is the current key", non_retryable=True
            )
        key = await self.provider.get_key(key_id)
        acted = key is not None and key.state == "active"
        if acted:
            await self.provider.revoke_key(key_id)
        return RevokeResult(
            version_id="",
            principal=key.describe() if key is not None else key_id,
            acted=acted,
            rejected=not await self.works(value),
            verified_at=datetime.now(UTC),
        )

    async def audit(self, revoked: str, current: str) -> AuditResult:
        old, new = self._parse(revoked)["key_id"], self._parse(current)["key_id"]
        keys = await self.provider.list_keys()
        state = {k.id: k.state for k in keys}
        others = [k for k in keys if k.state == "active" and k.id != new]
        findings = [
            f"revoked key {old}: {state.get(old, 'unknown to the vendor')}",
            f"current key {new}: " + ("works" if await self.works(current) else "is REFUSED"),
            f"{len(keys)} key(s) on the account, {sum(k.state == 'active' for k in keys)} active",
        ]
        warnings = [
            f"active key {k.describe()} is not the one in {self.arn}: check who uses it"
            for k in others
        ]
        return AuditResult(findings=findings, warnings=warnings)
