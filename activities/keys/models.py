"""What every API key provider speaks: key metadata, a freshly created key, and its errors.

A provider is a small async class over one `httpx.AsyncClient` (like the deploy providers in
`activities/deploy/`) that turns a vendor's key API into these types.

Secret values never leave the activity that handles them. `ApiKey` is metadata only (id,
state, last four characters) and may travel in Temporal payloads, logs and reports.
`CreatedKey` carries the new value as a `SecretStr` and is deliberately not serializable: an
activity stores the value (in AWS Secrets Manager) and returns only the `ApiKey`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, Protocol

from pydantic import BaseModel, SecretStr, field_validator

from activities.http.errors import ProviderError

KeyState = Literal["active", "revoked"]


class ApiKey(BaseModel):
    """One API key as the provider lists it: never its value."""

    id: str
    created_at: datetime
    state: KeyState
    last4: str | None = None
    name: str | None = None

    @field_validator("last4")
    @classmethod
    def _only_last_four(cls, value: str | None) -> str | None:
        # A provider that answers more than four characters here must not make the rest of
        # the key travel with the metadata.
        return value[-4:] if value else None

    def describe(self) -> str:
        """`key_123 (…abcd, created 2026-11-20 10:00 UTC, active)`, for plans and reports."""
        created = self.created_at
        if created.tzinfo is not None:
            created = created.astimezone(UTC)
        parts = [f"…{self.last4}"] if self.last4 else []
        parts += [f"created {created:%Y-%m-%d %H:%M} UTC", self.state]
        return f"{self.id} ({', '.join(parts)})"


class CreatedKey:
    """A key just created: its metadata and its value.

    Only for the activity that creates the key and stores the value. Not a dataclass nor a
    pydantic model on purpose: Temporal's data converters refuse to serialize it, so returning
    it from an activity fails loudly instead of sending the value (or a masked placeholder) to
    the workflow history. `repr()`/`str()` show the metadata and a masked value.
    """

    __slots__ = ("key", "value")

    key: ApiKey
    value: SecretStr

    def __init__(self, key: ApiKey, value: SecretStr) -> None:
        self.key = key
        self.value = value

    def __repr__(self) -> str:
        return f"CreatedKey(key={self.key!r}, value={self.value!r})"

    def __str__(self) -> str:
        return f"new key {self.key.describe()}"


class KeyProvider(Protocol):
    """The five things the key_rotation runbook needs from a vendor's key API.

    - `list_keys()`: every key of the account, following the vendor's pagination to the end.
    - `get_key(key_id)`: one key, or None when the vendor knows no such id.
    - `create_key(name, idempotency_key)`: a new active key. The same `idempotency_key` again
      returns the same key (with its value), never a second one, so a retried activity whose
      first answer was lost does not leave an orphan key behind.
    - `revoke_key(key_id)`: revoke; revoking an already revoked key succeeds, an unknown id is
      a (non-retryable) error.
    - `key_works(value)`: whether the vendor accepts `value` right now (its verify endpoint,
      authenticated with that key): True on 200, False on 401/403; other failures raise.
    """

    async def list_keys(self) -> list[ApiKey]: ...

    async def get_key(self, key_id: str) -> ApiKey | None: ...

    async def create_key(self, name: str, idempotency_key: str) -> CreatedKey: ...

    async def revoke_key(self, key_id: str) -> None: ...

    async def key_works(self, value: str) -> bool: ...


class KeyProviderError(ProviderError):
    """A key provider call failed (status, retryability, Retry-After as `ProviderError`), under
    its own Temporal error type. Its message never contains a secret value."""

    error_type = "KeyProviderError"
