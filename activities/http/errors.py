"""How a vendor's HTTP API fails, mapped once for every client of one (deploy platforms, API-key
vendors): 401/403/404 are final and say what to fix, 429 waits the vendor's `Retry-After`,
5xx and transport failures are retried."""

from __future__ import annotations

from datetime import timedelta

import httpx
from temporalio.exceptions import ApplicationError

REDACTED = "[redacted]"


class ProviderError(ApplicationError):
    """A vendor API call failed. Retryable unless the fix is in the config or the token.

    The Temporal error type is the class's `error_type`, so a workflow or retry policy tells a
    deploy platform's failures from a key vendor's."""

    error_type = "DeployProviderError"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = True,
        retry_after: timedelta | None = None,
    ) -> None:
        super().__init__(
            message,
            type=self.error_type,
            non_retryable=not retryable,
            next_retry_delay=retry_after,
        )
        self.status = status


def error_for_status(
    vendor: str,
    status: int,
    what: str,
    body: str = "",
    retry_after: str | None = None,
    *,
    config_hint: str = "the target's [deploy] config",
    error: type[ProviderError] = ProviderError,
) -> ProviderError:
    """Map an HTTP error status to a clear, correctly retryable error.

    401/403 are the token's fault and 404 the config's: retrying cannot help, and the message
    says what to fix. 429 carries the vendor's `Retry-After` so Temporal's next attempt waits
    exactly that long (the activity retry policy bounds the total). 5xx are retried.
    `config_hint` names the config section the 401/404 messages point at, so providers
    configured elsewhere (API key providers) send the reader to the right place.
    """
    detail = f" ({body[:200]})" if body else ""
    if status == 401:
        return error(
            f"{vendor} refused the token for {what}: 401 unauthorized; check the token "
            f"reference in {config_hint}{detail}",
            status=status,
            retryable=False,
        )
    if status == 403:
        return error(
            f"{vendor} token may not {what}: 403 forbidden; give the token access to this "
            f"project/team{detail}",
            status=status,
            retryable=False,
        )
    if status == 404:
        return error(
            f"{vendor} found nothing for {what}: 404; check the ids in {config_hint}{detail}",
            status=status,
            retryable=False,
        )
    if status == 429:
        delay = parse_retry_after(retry_after)
        return error(
            f"{vendor} rate-limited {what}: 429, retry after {delay.total_seconds():.0f}s",
            status=status,
            retry_after=delay,
        )
    return error(
        f"{vendor} failed to {what}: HTTP {status}{detail}",
        status=status,
        retryable=status >= 500 or status in (408, 409),
    )


def parse_retry_after(value: str | None, default: float = 5.0) -> timedelta:
    """`Retry-After` in seconds (an HTTP date is rare from APIs; treat it as the default)."""
    try:
        seconds = float(value) if value is not None else default
    except ValueError:
        seconds = default
    return timedelta(seconds=min(max(seconds, 0.5), 300.0))


def unreachable(
    vendor: str,
    what: str,
    exc: httpx.TransportError,
    *secrets: str,
    error: type[ProviderError] = ProviderError,
) -> ProviderError:
    """A transport failure (DNS, refused, timeout), retryable. Raise it `from None`: the httpx
    error holds the request, and with it the bearer token; `secrets` are cut from the text."""
    detail = redact(f"{type(exc).__name__}: {exc}", *secrets)
    return error(f"{vendor} could not be reached to {what}: {detail}", retryable=True)


def redact(text: str, *secrets: str) -> str:
    """`text` without any of `secrets` (a vendor may echo the key it refused)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text
