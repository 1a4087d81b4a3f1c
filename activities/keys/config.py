"""Where the key_rotation runbook finds a vendor's key API, and with which admin token."""

from __future__ import annotations

from string import Formatter
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from activities.refs import SecretRef


class GenericKeyProviderConfig(BaseModel):
    """A vendor's key API behind four HTTP endpoints (implemented by
    `activities/keys/generic.py`; `infra/fakes/key_service.py` is a local fake of it).

    The HTTP contract (JSON bodies; `admin_token` as `Authorization: Bearer <admin token>`
    except on `verify_url`):

    - `POST create_url` `{"name": "..."}` with header `Idempotency-Key: <key>` -> 201 `{"id",
      "key" (the secret value), "created_at" (ISO 8601), "last4", "name"}`. The same
      `Idempotency-Key` again answers 200 with the same body and creates nothing.
    - `GET list_url?limit=100[&cursor=C]` -> `{"data": [{"id", "created_at", "state"
      ("active"|"revoked"), "last4", "name"}, ...], "next_cursor": "C" | null}`; never values.
    - `POST revoke_url` (a template: `{id}` is replaced by the URL-quoted key id) -> 200
      `{"id", "state": "revoked"}`, also when the key was already revoked; 404 for an unknown id.
    - `GET verify_url` with `Authorization: Bearer <the key being tested>` -> 200 `{"key_id"}`
      when that key is active, 401 when it is unknown or revoked.
    - Any endpoint may answer 429 with `Retry-After` (seconds) when rate-limited.

    401/403 mean the admin token is wrong or lacks permission; the engine does not retry them.
    Created keys are named `<key_name_prefix>-<name>` so the vendor's dashboard shows which keys
    the engine made.
    """

    model_config = ConfigDict(extra="forbid")

    provider: Literal["generic"]
    create_url: str
    list_url: str
    revoke_url: str
    verify_url: str
    admin_token: SecretRef
    timeout_seconds: float = Field(default=30.0, gt=0)
    key_name_prefix: str = "remediate"

    @field_validator("create_url", "list_url", "revoke_url", "verify_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @field_validator("revoke_url")
    @classmethod
    def _id_template(cls, value: str) -> str:
        try:
            fields = {name for _, name, _, _ in Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise ValueError(f"revoke_url {value!r} is not a valid template: {exc}") from exc
        if fields != {"id"} or "{id}" not in value:
            raise ValueError(
                f"revoke_url must contain `{{id}}` (where the key id goes) and no other "
                f"`{{...}}` field; got {value!r}"
            )
        return value

    def revoke_url_for(self, key_id: str) -> str:
        """`revoke_url` with `{id}` replaced by `key_id`, which the caller has URL-quoted."""
        return self.revoke_url.replace("{id}", key_id)

    def describe(self) -> str:
        host = urlsplit(self.create_url).netloc
        return f"generic key provider at {host} (admin token {self.admin_token.describe()})"
