"""Temporal activities of the key_rotation runbook: Secrets Manager's rotation protocol over
a credential of any kind (`activities/keys/credentials.py`).

- `inspect_credential`: the versions, who the current one names, whether it works, where
  this rotation's token already is.
- `create_pending_version` (createSecret): the new value as version `token`, AWSPENDING. An
  existing version `token` is reused, so a retry or a resumed run never makes a second one.
- `set_pending_on_target` (setSecret): the new password on the role (a new key is live
  already); skipped when the new login already works.
- `test_credential_version` (testSecret): does the target accept that version?
- `finish_rotation` (finishSecret): AWSCURRENT moves to `token`.
- `restore_previous_version`: after a failed verification, the previous version is current
  again and (single-user Postgres) its password is the role's again.
- `revoke_credential_version`: the old (or compromised) credential stops working; proven by
  trying it afterwards.
- `audit_credential`: after a revoke, what still works and what a person should look at.

Each returns version ids and principals; every value is read from Secrets Manager inside the
activity that needs it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.secrets import protocol as protocol
from activities.secrets.credentials import credential_for
from activities.secrets.models import (
    AuditInput,
    AuditResult,
    CredentialInput,
    CredentialState,
    CredentialTest,
    PendingResult,
    RevokeInput,
    RevokeResult,
    StepResult,
    TokenStage,
    VersionInfo,
    VersionInput,
)
from activities.secrets.references import secretsmanager_client


async def _sm(call: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(call, secretsmanager_client(), *args, **kwargs)


def _created_dates(client: Any, arn: str) -> dict[str, Any]:
    listed = client.list_secret_version_ids(SecretId=arn, IncludeDeprecated=True)
    return {v["VersionId"]: v.get("CreatedDate") for v in listed.get("Versions", [])}


def _stage_of(token: str, versions: protocol.SecretVersions, known: set[str]) -> TokenStage:
    if versions.current == token:
        return "current"
    if versions.pending == token:
        return "pending"
    if versions.previous == token:
        return "previous"
    return "superseded" if token in known else "absent"


@activity.defn
async def inspect_credential(params: CredentialInput) -> CredentialState:
    async with credential_for(params.target) as (config, credential):
        arn = config.secret_arn
        versions = await _sm(protocol.versions, arn)
        if versions.current is None:
            raise ApplicationError(
                f"{arn} has no AWSCURRENT version to rotate from: store the credential first",
                type="ConfigError",
                non_retryable=True,
            )
        created = await _sm(_created_dates, arn)
        current_value = await _sm(protocol.value_of, arn, version_id=versions.current)
        current_principal = await credential.principal(current_value)
        previous, previous_sessions = None, 0
        if versions.previous is not None:
            previous_value = await _sm(protocol.value_of, arn, version_id=versions.previous)
            previous = VersionInfo(
                version_id=versions.previous,
                principal=await credential.principal(previous_value),
                created_at=created.get(versions.previous),
            )
            if previous.principal != current_principal:
                previous_sessions = await credential.sessions(previous_value)
        return CredentialState(
            arn=arn,
            type="postgres" if credential.type == "postgres" else "api_key",
            strategy=credential.strategy,
            current=VersionInfo(
                version_id=versions.current,
                principal=current_principal,
                created_at=created.get(versions.current),
            ),
            previous=previous,
            token_stage=_stage_of(params.token, versions, set(created)),
            next_principal=credential.next_principal(current_value),
            current_works=await credential.works(current_value),
            sessions_of_current=await credential.sessions(current_value),
            sessions_of_previous=previous_sessions,
            stale_pending=versions.pending
            if versions.pending not in (None, params.token)
            else None,
        )


async def _as_planned(arn: str, params: CredentialInput) -> None:
    """The precondition of every acting step: the secret's current version is the one the
    plan was made from (or this rotation's own, from an earlier attempt)."""
    if not params.planned_from:
        return
    current = (await _sm(protocol.versions, arn)).current
    if current not in (params.planned_from, params.token):
        raise ApplicationError(
            f"{arn}'s current version is {current}, not {params.planned_from} that the "
            "approved plan was made from: it was rotated meanwhile",
            type="PlanDrift",
            non_retryable=True,
        )


@activity.defn
async def create_pending_version(params: CredentialInput) -> PendingResult:
    async with credential_for(params.target) as (config, credential):
        arn, token = config.secret_arn, params.token
        await _as_planned(arn, params)
        if await _sm(protocol.pending_exists, arn, token):
            value = await _sm(protocol.value_of, arn, version_id=token)
            return PendingResult(
                version_id=token, principal=await credential.principal(value), created=False
            )
        current = await _sm(protocol.value_of, arn)
        value = await credential.new_value(current, token)
        await _sm(protocol.put_pending, arn, token, value)
        return PendingResult(
            version_id=token, principal=await credential.principal(value), created=True
        )


@activity.defn
async def set_pending_on_target(params: CredentialInput) -> StepResult:
    async with credential_for(params.target) as (config, credential):
        await _as_planned(config.secret_arn, params)
        value = await _sm(protocol.value_of, config.secret_arn, version_id=params.token)
        return await credential.set_on_target(value)


@activity.defn
async def test_credential_version(params: VersionInput) -> CredentialTest:
    async with credential_for(params.target) as (config, credential):
        value = await _sm(protocol.value_of, config.secret_arn, version_id=params.version_id)
        return CredentialTest(
            version_id=params.version_id,
            principal=await credential.principal(value),
            works=await credential.works(value),
        )


@activity.defn
async def finish_rotation(params: CredentialInput) -> protocol.SecretVersions:
    async with credential_for(params.target) as (config, _):
        await _as_planned(config.secret_arn, params)
        return await _sm(protocol.finish, config.secret_arn, params.token)  # type: ignore[no-any-return]


@activity.defn
async def restore_previous_version(params: CredentialInput) -> StepResult:
    """Idempotent: the secret goes back only while `token` is current; the role's password
    is set again only if the (restored) current version no longer logs in."""
    async with credential_for(params.target) as (config, credential):
        arn = config.secret_arn
        before = await _sm(protocol.versions, arn)
        after = await _sm(protocol.put_back_previous, arn, params.token)
        current = await _sm(protocol.value_of, arn)
        reset = await credential.set_on_target(current)
        moved = before.current != after.current
        detail = (
            f"AWSCURRENT back on {after.current}" if moved else f"AWSCURRENT is {after.current}"
        )
        if reset.acted:
            detail += f"; {reset.detail} (the previous password again)"
        if not await credential.works(current):
            raise ApplicationError(
                f"{detail}, but the target refuses that version: the credential needs a person",
                non_retryable=True,
            )
        return StepResult(acted=moved or reset.acted, detail=detail)


@activity.defn
async def revoke_credential_version(params: RevokeInput) -> RevokeResult:
    async with credential_for(params.target) as (config, credential):
        arn = config.secret_arn
        versions = await _sm(protocol.versions, arn)
        if versions.current == params.version_id and not params.compromised:
            raise ApplicationError(
                f"refusing to revoke {params.version_id}: it is {arn}'s AWSCURRENT version",
                non_retryable=True,
            )
        value = await _sm(protocol.value_of, arn, version_id=params.version_id)
        current = await _sm(protocol.value_of, arn)
        result = await credential.revoke(value, current, params.compromised)
        return result.model_copy(update={"version_id": params.version_id})


@activity.defn
async def audit_credential(params: AuditInput) -> AuditResult:
    async with credential_for(params.target) as (config, credential):
        arn = config.secret_arn
        revoked = await _sm(protocol.value_of, arn, version_id=params.revoked_version)
        current = await _sm(protocol.value_of, arn)
        return await credential.audit(revoked, current)


async def current_version_works(target: str) -> bool:
    """For the verification loop: the target accepts the secret's AWSCURRENT version."""
    async with credential_for(target) as (config, credential):
        return await credential.works(await _sm(protocol.value_of, config.secret_arn))
