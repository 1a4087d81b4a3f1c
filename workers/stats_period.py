"""The period the team's numbers cover (`remediate stats --since`, `GET /stats?since=`) and
their defaults: light, for the CLI's options."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

DEFAULT_SINCE = "7d"
DEFAULT_LIMIT = 5000
DEFAULT_CONCURRENCY = 8
_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class SinceError(ValueError):
    """A period the caller wrote that is neither a duration nor a time."""


def parse_since(text: str, now: datetime) -> datetime:
    """`7d`, `24h`, `30m`, `2w` before `now`, or an ISO 8601 date or time (UTC if no offset)."""
    match = _DURATION.match(text)
    if match:
        return now - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SinceError(
            f"since={text!r} is neither a duration (7d, 24h, 30m, 2w) nor an ISO 8601 time "
            "(2026-01-31 or 2026-01-31T12:00:00Z)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
