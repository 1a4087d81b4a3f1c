"""AWS Secrets Manager's rotation protocol, step by step, each step idempotent.

A rotation is identified by its client request token: the version id of the new value.

1. `put_pending`: store the new value as version `token` with stage AWSPENDING. Secrets
   Manager treats a repeated PutSecretValue with the same token and value as a no-op, so a
   retried step never makes a second version; the caller generates the value only when
   `pending_exists` says there is none yet.
2. (the caller sets the value on the target and tests it, reading it back with
   `value_of(..., version_id=token)`.)
3. `finish`: move AWSCURRENT to `token` (the old version becomes AWSPREVIOUS) and drop
   AWSPENDING. Already current: nothing to do.
4. `put_back_previous`: after a failed verification, AWSCURRENT returns to AWSPREVIOUS.

Values are read and written here and nowhere else; what returns to a workflow is version ids.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from temporalio.exceptions import ApplicationError

CURRENT, PENDING, PREVIOUS = "AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"


class SecretVersions(BaseModel):
    """Which version holds which stage (version ids only)."""

    arn: str
    current: str | None = None
    pending: str | None = None
    previous: str | None = None


def versions(client: Any, arn: str) -> SecretVersions:
    described = client.describe_secret(SecretId=arn)
    stages: dict[str, list[str]] = described.get("VersionIdsToStages", {})
    out = SecretVersions(arn=described.get("ARN", arn))
    for version, names in stages.items():
        if CURRENT in names:
            out.current = version
        if PENDING in names:
            out.pending = version
        if PREVIOUS in names:
            out.previous = version
    return out


def pending_exists(client: Any, arn: str, token: str) -> bool:
    """Version `token` exists (pending, or already promoted by an earlier attempt)."""
    stages = client.describe_secret(SecretId=arn).get("VersionIdsToStages", {})
    return token in stages


def put_pending(client: Any, arn: str, token: str, value: str) -> None:
    if pending_exists(client, arn, token):
        return
    client.put_secret_value(
        SecretId=arn, ClientRequestToken=token, SecretString=value, VersionStages=[PENDING]
    )


def value_of(client: Any, arn: str, *, version_id: str | None = None, stage: str = CURRENT) -> str:
    kwargs = {"VersionId": version_id} if version_id else {"VersionStage": stage}
    value = client.get_secret_value(SecretId=arn, **kwargs).get("SecretString")
    if value is None:
        raise ApplicationError(
            f"{arn} ({version_id or stage}) holds no string value", non_retryable=True
        )
    return str(value)


def finish(client: Any, arn: str, token: str) -> SecretVersions:
    state = versions(client, arn)
    if state.current != token:
        if not pending_exists(client, arn, token):
            raise ApplicationError(
                f"{arn} has no version {token} to make current", non_retryable=True
            )
        client.update_secret_version_stage(
            SecretId=arn, VersionStage=CURRENT, MoveToVersionId=token,
            RemoveFromVersionId=state.current,
        )  # fmt: skip
    state = versions(client, arn)
    if state.pending == token:
        client.update_secret_version_stage(
            SecretId=arn, VersionStage=PENDING, RemoveFromVersionId=token
        )
    return versions(client, arn)


def put_back_previous(client: Any, arn: str, token: str) -> SecretVersions:
    """Undo `finish`: the version before `token` is current again. Idempotent: if `token` is
    not current (never finished, or already put back), nothing changes."""
    state = versions(client, arn)
    if state.current != token:
        return state
    if state.previous is None:
        raise ApplicationError(f"{arn} has no AWSPREVIOUS version to put back", non_retryable=True)
    client.update_secret_version_stage(
        SecretId=arn, VersionStage=CURRENT, MoveToVersionId=state.previous,
        RemoveFromVersionId=token,
    )  # fmt: skip
    return versions(client, arn)
