"""The app's own restart hook (`[targets.X.restart]`): a POST with an idempotency key."""

from __future__ import annotations

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.config import load_config
from activities.deploy.models import RestartAppInput, RestartAppResult
from activities.secrets.references import resolve_secret


@activity.defn
async def restart_app(params: RestartAppInput) -> RestartAppResult:
    hook = load_config().target(params.target).restart
    if hook is None:
        raise ApplicationError(
            f"target {params.target!r} has no [restart] hook configured", non_retryable=True
        )
    headers = {"Idempotency-Key": params.idempotency_key}
    if hook.token is not None:
        headers["Authorization"] = f"Bearer {resolve_secret(hook.token)}"
    async with httpx.AsyncClient(timeout=hook.timeout_seconds) as client:
        response = await client.post(hook.url, headers=headers)
    if response.status_code in (401, 403):
        raise ApplicationError(
            f"restart hook of {params.target!r} refused our credential ({response.status_code})",
            non_retryable=True,
        )
    if response.status_code >= 400:
        # Retryable: the app may be mid-crash; Temporal's retry policy paces the attempts.
        raise ApplicationError(f"restart hook of {params.target!r} answered {response.status_code}")
    body = (
        response.json()
        if response.headers.get("content-type", "").startswith("application/json")
        else {}
    )
    return RestartAppResult(
        url=hook.url,
        status_code=response.status_code,
        already_done=bool(body.get("already_done", False)),
    )
