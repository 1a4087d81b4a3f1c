"""Application read-only mode through the app's own maintenance flag (runbook 004's kill switch).

The target's `[app_flag]` names an endpoint that answers `GET` with `{"read_only": bool}` and
takes `PUT {"read_only": bool}`. Setting it is idempotent: the flag is read first and only
changed when it differs. A write probe endpoint, if configured, is POSTed to and must be
refused (423 Locked or 503) while read-only and accepted (2xx) otherwise; it should perform a
harmless write (the demo app's rolls its transaction back).
"""

from __future__ import annotations

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.config import AppFlagConfig, load_config
from activities.models import ReadOnlyInput, ReadOnlyResult, WriteCheck
from activities.secrets.references import resolve_secret

REFUSED = (423, 503)


def _flag(target: str) -> AppFlagConfig:
    flag = load_config().target(target).app_flag
    if flag is None:
        raise ApplicationError(
            f"target {target!r} has no [targets.{target}.app_flag]; add its url to use the "
            "application-flag read-only mode",
            type="ConfigError",
            non_retryable=True,
        )
    return flag


def _client(flag: AppFlagConfig) -> httpx.AsyncClient:
    headers = {}
    if flag.token is not None:
        headers["Authorization"] = f"Bearer {resolve_secret(flag.token)}"
    return httpx.AsyncClient(timeout=flag.timeout_seconds, headers=headers)


def _raise_for(response: httpx.Response, what: str) -> None:
    if response.status_code in (401, 403, 404):
        raise ApplicationError(
            f"{what} answered {response.status_code}: check the app_flag url and token",
            type="ConfigError",
            non_retryable=True,
        )
    if response.status_code >= 400:
        raise ApplicationError(f"{what} answered {response.status_code}")


async def _read(client: httpx.AsyncClient, url: str) -> bool:
    response = await client.get(url)
    _raise_for(response, f"GET {url}")
    value = response.json().get("read_only")
    if not isinstance(value, bool):
        raise ApplicationError(
            f'GET {url} must answer {{"read_only": true|false}}, got {response.text[:200]}',
            type="ConfigError",
            non_retryable=True,
        )
    return value


def _statement(flag: AppFlagConfig, enabled: bool) -> str:
    return f'PUT {flag.url} {{"read_only": {str(enabled).lower()}}}'


@activity.defn
async def app_read_only_state(params: ReadOnlyInput) -> ReadOnlyResult:
    """For the plan: the flag's current value and the request that would set it."""
    flag = _flag(params.target)
    async with _client(flag) as client:
        current = await _read(client, flag.url)
    return ReadOnlyResult(
        scope=flag.url,
        was_read_only=current,
        read_only=current,
        statements=[_statement(flag, params.enabled)],
    )


@activity.defn
async def set_app_read_only(params: ReadOnlyInput) -> ReadOnlyResult:
    flag = _flag(params.target)
    statement = _statement(flag, params.enabled)
    async with _client(flag) as client:
        was = await _read(client, flag.url)
        if was != params.enabled:
            response = await client.put(flag.url, json={"read_only": params.enabled})
            _raise_for(response, f"PUT {flag.url}")
            if await _read(client, flag.url) != params.enabled:
                raise ApplicationError(f"{flag.url} did not keep read_only={params.enabled}")
    return ReadOnlyResult(
        scope=flag.url, was_read_only=was, read_only=params.enabled, statements=[statement]
    )


@activity.defn
async def check_app_writes(params: ReadOnlyInput) -> WriteCheck:
    """Reads work (the read probe, else the flag endpoint), and the write probe is refused
    (or, without a write probe, the flag says read-only)."""
    flag = _flag(params.target)
    async with _client(flag) as client:
        try:
            read = await client.get(flag.read_probe_url or flag.url)
            reads_ok = read.status_code == 200
            if flag.write_probe_url is None:
                refused = await _read(client, flag.url)
                return WriteCheck(reads_ok=reads_ok, writes_refused=refused, detail="flag only")
            write = await client.post(flag.write_probe_url)
        except httpx.HTTPError as err:
            return WriteCheck(reads_ok=False, writes_refused=True, detail=type(err).__name__)
    if write.status_code not in REFUSED and not write.is_success:
        # Neither refused nor accepted: the probe itself is broken; say so, don't guess.
        raise ApplicationError(f"write probe {flag.write_probe_url} answered {write.status_code}")
    return WriteCheck(
        reads_ok=reads_ok,
        writes_refused=write.status_code in REFUSED,
        detail=f"write probe answered {write.status_code}",
    )
