"""Rendering the approval pages: one Jinja2 environment over `workers/templates/`, escaping
everything (plans, alert labels and reasons are other people's text), with the filters the
templates share. Times are shown in UTC with how long ago or until, so a lead on a phone in
another time zone reads the deadline right."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined

# What every page answers with: nothing from elsewhere (no script at all), never framed (a
# page with Approve buttons must not sit under another site's overlay), not cached.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(delta: timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def _seconds(value: float | None) -> str:
    return "—" if value is None else _span(timedelta(seconds=value))


def _relative(moment: datetime | None) -> str:
    """ "3 min 05 s ago" or "in 27 min 55 s"."""
    if moment is None:
        return ""
    delta = moment - datetime.now(UTC)
    return f"in {_span(delta)}" if delta.total_seconds() > 0 else f"{_span(delta)} ago"


def _percent(share: float | None) -> str:
    return "unknown" if share is None else f"{share:.0%}"


def _is_mapping(value: Any) -> bool:
    return isinstance(value, dict)


def _is_rows(value: Any) -> bool:
    """A list of objects: shown as a table."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("workers", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, relative=_relative, span=_span, percent=_percent)
    env.filters.update(seconds=_seconds)
    env.filters.update(columns=_columns)
    env.tests.update(mapping_value=_is_mapping, rows=_is_rows)
    return env


ENVIRONMENT = _environment()


def render(template: str, status: int = 200, /, **context: Any) -> HTMLResponse:
    body = ENVIRONMENT.get_template(template).render(**context)
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def message_page(
    title: str, message: str, status: int, links: list[tuple[str, str]] | None = None, **more: Any
) -> HTMLResponse:
    """A refusal or an outcome, said in one sentence, with where to go next."""
    context = {"identity": None, "csrf": "", **more}
    return render(
        "message.html", status, title=title, message=message, links=links or [], **context
    )
