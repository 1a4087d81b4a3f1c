"""Who is on a page, and whether a form really comes from one: what the page routes and the
sign-in routes share.

- `page_session`: the browser session (`workers/browser_sessions.py`) or `SignInNeeded`,
  which the routes answer with a redirect to the sign-in page, saying why.
- `checked_form`: a POSTed form, refused unless it is URL-encoded, from this site (Origin),
  and carries the CSRF token of what it is bound to (`workers/csrf.py`).
- Cookies are `Secure` whenever the pages are served over https: the request's scheme, or
  `[pages] public_url` behind a proxy that terminates TLS.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import Request
from fastapi.responses import RedirectResponse

from activities.config import ConfigError, EngineConfig
from workers.browser_sessions import COOKIE, BrowserSession, SessionRefusedError, read_session
from workers.csrf import FIELD, CsrfRefusedError, check_form_token

MAX_FORM_FIELDS = 20
SIGN_IN_PATH = "/ui/sign-in"

SignInReason = Literal["none", "expired", "invalid", "signed-out"]
# What the sign-in page says for each reason; only these, so a link cannot make it say more.
SIGN_IN_REASONS: dict[str, str] = {
    "none": "Sign in to see and decide remediations.",
    "expired": "Your session has expired: sign in again.",
    "invalid": "Your session is no longer valid: sign in again.",
    "signed-out": "You have signed out.",
}


class SignInNeeded(Exception):
    def __init__(self, reason: SignInReason) -> None:
        super().__init__(SIGN_IN_REASONS[reason])
        self.reason = reason


class FormRefusedError(Exception):
    """A form the service will not act on; `status` fits, the message says what to do."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def page_session(request: Request, config: EngineConfig) -> BrowserSession:
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        raise SignInNeeded("none")
    try:
        session = read_session(config, cookie)
    except SessionRefusedError as err:
        raise SignInNeeded("expired" if err.expired else "invalid") from None
    if not session.session_id:  # a session from before the pages: it binds no form
        raise SignInNeeded("invalid")
    return session


def sign_in_redirect(next_path: str, reason: SignInReason) -> RedirectResponse:
    target = f"{SIGN_IN_PATH}?next={quote(safe_next(next_path), safe='')}&why={reason}"
    return RedirectResponse(target, status_code=303)


def safe_next(path: str | None) -> str:
    """Where to go after signing in: a path of the pages, never another site (an open
    redirect would let a link send a person from the sign-in to anywhere)."""
    if not path or not path.startswith("/ui/") or path.startswith("//") or "\\" in path:
        return "/ui/gates"
    parts = urlsplit(path)
    if parts.scheme or parts.netloc:
        return "/ui/gates"
    return path


def secure_cookies(request: Request, config: EngineConfig) -> bool:
    public = config.pages.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


def own_origin(request: Request, config: EngineConfig) -> set[str]:
    """The origins a form of the pages may come from: the public URL's, and the one the
    request was addressed to (a proxy may rewrite the Host, so both)."""
    origins = {f"{request.url.scheme}://{request.url.netloc}"}
    if config.pages.public_url:
        parts = urlsplit(config.pages.public_url)
        origins.add(f"{parts.scheme}://{parts.netloc}")
    return origins


async def checked_form(request: Request, config: EngineConfig, bound_to: str) -> dict[str, str]:
    """The form's fields, once it is shown to come from a page this service rendered for the
    same session (or sign-in) it is bound to."""
    origin = request.headers.get("origin")
    if origin is not None and origin not in own_origin(request, config):
        raise FormRefusedError(
            f"this form was sent from {origin}, not from the approval pages: open the page "
            "and decide there",
            403,
        )
    fields = await form_fields(request)
    try:
        check_form_token(config, bound_to, fields.get(FIELD, ""))
    except CsrfRefusedError as err:
        raise FormRefusedError(str(err), 403) from None
    except ConfigError as err:
        raise FormRefusedError(f"the service cannot check forms: {err}", 503) from None
    return fields


async def form_fields(request: Request) -> dict[str, str]:
    """A URL-encoded form (what the pages' forms send), each field once. The body's size is
    bounded before this reads it (`workers/body_limit.py`)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise FormRefusedError(
            "send the form as the page does (application/x-www-form-urlencoded)", 415
        )
    body = await request.body()
    try:
        parsed = parse_qs(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise FormRefusedError("the form is not UTF-8 form data: send it again", 400) from None
    if any(len(values) > 1 for values in parsed.values()):
        raise FormRefusedError("a field appears twice in the form: send it from the page", 400)
    return {name: values[0] for name, values in parsed.items()}
