"""Generic HTTP key provider: a vendor's API keys behind one small, documented contract, for
vendors without a dedicated provider (or a thin adapter in front of one).

The contract your endpoints implement (JSON; `Authorization: Bearer <admin token>` on all but
the verify endpoint; URLs from `GenericKeyProviderConfig`):

- `POST create_url` `{"name": "..."}`, header `Idempotency-Key: <key>` -> 201 `{"id", "key" (the
  secret value), "created_at" (ISO 8601), "last4", "name"}`; the same `Idempotency-Key` again
  -> 200 with the same body, and no second key.
- `GET list_url?limit=100[&cursor=C]` -> `{"data": [{"id", "created_at", "state"
  ("active"|"revoked"), "last4", "name"}, ...], "next_cursor": "C" | null}`.
- `POST revoke_url` (`{id}` replaced by the key id) -> 200 `{"id", "state": "revoked"}`, also
  for a key already revoked; 404 for an unknown id.
- `GET verify_url` with `Authorization: Bearer <the key being tested>` -> 200 `{"key_id"}` if
  that key is active, 401 if it is unknown or revoked.
- Any endpoint: 429 with `Retry-After` (seconds) when rate-limited.

Errors: 401/403/404 are final (fix the admin token, its permissions, or the URL / key id); 429
waits `Retry-After` (Temporal's next attempt is delayed by exactly that); 5xx are retried.

Where the contract is silent, this module chooses:

- There is no per-key read endpoint: `get_key` scans `list_keys`.
- Keys are created as `<key_name_prefix>-<name>`, so the vendor's dashboard shows which keys
  the engine made.
- Secret values (the admin token, a new key, a key under test) appear only in request headers
  and in `CreatedKey.value`. Error bodies are scrubbed of the values this call knows before they
  reach an exception message, answers are validated field by field without echoing input, and
  transport errors are not chained (an `httpx` error holds the request and so its headers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import SecretStr, ValidationError

from activities.http.errors import error_for_status, redact, unreachable
from activities.keys.config import GenericKeyProviderConfig
from activities.keys.models import ApiKey, CreatedKey, KeyProviderError

Json = Mapping[str, Any]

# Where error messages send the reader (see `error_for_status`).
CONFIG_HINT = "the key provider config"
PAGE_SIZE = 100
# The metadata fields read from the vendor's answers; anything else (the value above all) is
# never handed to a model, so validation errors cannot echo it.
_METADATA = ("id", "created_at", "state", "last4", "name")


class GenericKeyProvider:
    """A `KeyProvider` over the generic HTTP contract above."""

    def __init__(
        self, config: GenericKeyProviderConfig, admin_token: str, client: httpx.AsyncClient
    ) -> None:
        self._config = config
        self._admin_token = admin_token
        self._client = client
        self._vendor = f"key provider {urlsplit(config.create_url).netloc}"

    def __repr__(self) -> str:
        return f"GenericKeyProvider({self._vendor})"

    # -- KeyProvider ---------------------------------------------------------------------

    async def list_keys(self) -> list[ApiKey]:
        what = "list keys"
        keys: dict[str, ApiKey] = {}
        cursor: str | None = None
        seen_cursors: set[str] = set()
        while True:
            params: dict[str, str | int] = {"limit": PAGE_SIZE}
            if cursor is not None:
                params["cursor"] = cursor
            response = await self._admin("GET", self._config.list_url, what, params=params)
            body = self._object(response, what)
            page = body.get("data")
            if not isinstance(page, list):
                raise self._unexpected(what, "no `data` list")
            for item in page:
                key = self._api_key(item, what)
                keys.setdefault(key.id, key)
            next_cursor = body.get("next_cursor")
            if next_cursor is None or next_cursor == "" or not page:
                return list(keys.values())
            if not isinstance(next_cursor, str):
                raise self._unexpected(what, "`next_cursor` is not a string")
            if next_cursor in seen_cursors:
                # A vendor bug would otherwise loop here until the activity times out.
                raise self._unexpected(what, f"`next_cursor` {next_cursor!r} came back twice")
            seen_cursors.add(next_cursor)
            cursor = next_cursor

    async def get_key(self, key_id: str) -> ApiKey | None:
        return next((key for key in await self.list_keys() if key.id == key_id), None)

    async def create_key(self, name: str, idempotency_key: str) -> CreatedKey:
        prefix = self._config.key_name_prefix
        full_name = f"{prefix}-{name}" if prefix else name
        what = f"create key {full_name}"
        response = await self._admin(
            "POST",
            self._config.create_url,
            what,
            json={"name": full_name},
            idempotency_key=idempotency_key,
        )
        body = self._object(response, what)
        value = body.get("key")
        if not isinstance(value, str) or not value:
            raise self._unexpected(what, "no `key` (the new key's value) in the answer")
        fields = {field: body[field] for field in _METADATA if field in body}
        fields.setdefault("state", "active")
        if not fields.get("last4"):
            fields["last4"] = value[-4:]
        key = self._model(fields, what)
        if key.state != "active":
            raise self._unexpected(what, f"the new key {key.id} is {key.state}")
        return CreatedKey(key=key, value=SecretStr(value))

    async def revoke_key(self, key_id: str) -> None:
        what = f"revoke key {key_id}"
        url = self._config.revoke_url_for(quote(key_id, safe=""))
        response = await self._send("POST", url, what, token=self._admin_token)
        if response.status_code == 404:
            raise KeyProviderError(
                f"{self._vendor} knows no key {key_id} (404 from revoke_url): check the key id, "
                f"and revoke_url in {CONFIG_HINT}",
                status=404,
                retryable=False,
            )
        self._check(response, what)
        state = self._object(response, what).get("state")
        if state != "revoked":
            # Retryable: a vendor that applies revocations asynchronously may say so once.
            raise KeyProviderError(
                f"{self._vendor} answered state {state!r} to {what}, not 'revoked'",
                status=response.status_code,
            )

    async def key_works(self, value: str) -> bool:
        what = "verify a key"
        response = await self._send("GET", self._config.verify_url, what, token=value)
        if response.status_code in (401, 403):
            return False
        self._check(response, what, secrets=(value,))
        return True

    # -- requests ------------------------------------------------------------------------

    async def _admin(
        self,
        method: str,
        url: str,
        what: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Json | None = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        """A call with the admin token that must succeed."""
        response = await self._send(
            method,
            url,
            what,
            token=self._admin_token,
            params=params,
            json=json,
            idempotency_key=idempotency_key,
        )
        self._check(response, what)
        return response

    async def _send(
        self,
        method: str,
        url: str,
        what: str,
        *,
        token: str,
        params: Mapping[str, str | int] | None = None,
        json: Json | None = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        try:
            return await self._client.request(
                method,
                url,
                params=params,
                json=json,
                headers=headers,
                timeout=self._config.timeout_seconds,
            )
        except httpx.TransportError as exc:
            raise unreachable(
                self._vendor, what, exc, self._admin_token, token, error=KeyProviderError
            ) from None

    def _check(self, response: httpx.Response, what: str, secrets: tuple[str, ...] = ()) -> None:
        if response.is_success:
            return
        status = response.status_code
        body = redact(response.text, self._admin_token, *secrets)
        if status == 403:
            detail = f" ({body[:200]})" if body else ""
            raise KeyProviderError(
                f"{self._vendor} admin token may not {what}: 403 forbidden; give the token "
                f"referenced by admin_token in {CONFIG_HINT} permission to manage API "
                f"keys{detail}",
                status=status,
                retryable=False,
            )
        raise error_for_status(
            self._vendor,
            status,
            what,
            body,
            response.headers.get("Retry-After"),
            config_hint=CONFIG_HINT,
            error=KeyProviderError,
        )

    # -- answers -------------------------------------------------------------------------

    def _object(self, response: httpx.Response, what: str) -> Json:
        try:
            data = response.json()
        except ValueError:
            raise self._unexpected(what, "the answer is not JSON") from None
        if not isinstance(data, Mapping):
            raise self._unexpected(what, "the answer is not a JSON object")
        return data

    def _api_key(self, item: object, what: str) -> ApiKey:
        if not isinstance(item, Mapping):
            raise self._unexpected(what, "a listed key is not a JSON object")
        return self._model({field: item[field] for field in _METADATA if field in item}, what)

    def _model(self, fields: Json, what: str) -> ApiKey:
        try:
            return ApiKey.model_validate(fields)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'key'}: {error['msg']}"
                for error in exc.errors(include_url=False, include_input=False)
            )
            raise self._unexpected(what, problems) from None

    def _unexpected(self, what: str, detail: str) -> KeyProviderError:
        return KeyProviderError(
            f"{self._vendor} answered an unexpected shape to {what}: {detail}", retryable=False
        )
