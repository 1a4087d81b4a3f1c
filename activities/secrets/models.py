"""What the key_rotation activities take and return: version ids, principals, counts.

Never a secret value: a principal is a role name (`shop_app_b`) or a key's metadata
(`key_123 (…abcd, created ..., active)`), and a version is Secrets Manager's version id.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, field_validator

from activities.postgres.models import SessionInfo

# Secrets Manager's ClientRequestToken: 32 to 64 characters.
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{32,64}$")

TokenStage = Literal["absent", "pending", "current", "previous", "superseded"]


class CredentialInput(BaseModel):
    target: str
    # The rotation's client request token: the id of the version it creates.
    token: str
    # The current version the approved plan was made from: acting steps refuse (PlanDrift)
    # when another is current (someone rotated meanwhile). Empty: not checked.
    planned_from: str = ""

    @field_validator("token")
    @classmethod
    def _token_shape(cls, value: str) -> str:
        if not TOKEN_PATTERN.match(value):
            raise ValueError("a rotation token is 32 to 64 letters, digits, '-' or '_'")
        return value


class VersionInput(BaseModel):
    target: str
    version_id: str


class VersionInfo(BaseModel):
    version_id: str
    principal: str
    created_at: datetime | None = None


class CredentialState(BaseModel):
    """The secret and what it unlocks, before a rotation acts."""

    arn: str
    type: Literal["postgres", "api_key"]
    # "alternating_users" or "single_user" (postgres), "new_key" (API keys).
    strategy: str
    current: VersionInfo
    previous: VersionInfo | None = None
    # Where this rotation's token already is: a resumed or repeated run acts on it.
    token_stage: TokenStage = "absent"  # noqa: S105 (a stage name, not a secret)
    # Who gets the new credential: the inactive role, the same role, or a new key.
    next_principal: str
    current_works: bool
    # Postgres: sessions open now under the current login.
    sessions_of_current: int = 0
    # ... and under the previous one (consumers that have not moved to the current login).
    sessions_of_previous: int = 0
    # A version staged AWSPENDING by someone else (a rotation left half done).
    stale_pending: str | None = None


class PendingResult(BaseModel):
    version_id: str
    principal: str
    # False: the version existed already (a retried step, or a resumed run).
    created: bool


class StepResult(BaseModel):
    acted: bool
    detail: str


class CredentialTest(BaseModel):
    version_id: str
    principal: str
    works: bool


class RevokeInput(BaseModel):
    target: str
    version_id: str
    # Compromised: the version may be the current one, and open sessions under it end.
    compromised: bool = False


class RevokeResult(BaseModel):
    version_id: str
    principal: str
    # False: it had already stopped working (nothing to do).
    acted: bool
    # Postgres: sessions open under the login when it was revoked, and how many were ended.
    sessions: list[SessionInfo] = []
    terminated: int = 0
    # Tested after revoking: the old credential is refused.
    rejected: bool
    # When the refusal was observed (the end of the exposure, in compromised mode).
    verified_at: datetime


class AuditInput(BaseModel):
    target: str
    revoked_version: str


class AuditResult(BaseModel):
    findings: list[str]
    # Things a person should look at (an unknown active key, a session still open).
    warnings: list[str] = []
