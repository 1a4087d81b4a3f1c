"""Signing in to the approval pages:

    GET  /ui/sign-in              the page: single sign-on (if [oidc] is configured) or a token
    POST /ui/sign-in/token        a token's identity (teams without an identity provider)
    GET  /ui/oidc/login           off to the identity provider (authorization code + PKCE)
    GET  /ui/oidc/callback        back from it: state, code, ID token checked (`workers/oidc.py`)
    POST /ui/sign-out             end the session

Each ends in the same session cookie (`workers/browser_sessions.py`), HttpOnly, SameSite=Lax,
lasting `[pages] session_ttl_seconds`. `POST /session` (the codec's sign-in) stays as it was.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from importlib.resources import files

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from activities.approval_auth import AuthenticationFailedError, identify
from activities.config import ConfigError, EngineConfig, load_config
from workers import oidc
from workers.browser_sessions import (
    SignInMethod,
    clear_session_cookie,
    issue_session,
    set_session_cookie,
)
from workers.csrf import PRE_SESSION_COOKIE, form_token, new_pre_session_value
from workers.page_auth import (
    SIGN_IN_REASONS,
    FormRefusedError,
    SignInNeeded,
    checked_form,
    page_session,
    safe_next,
    secure_cookies,
    sign_in_redirect,
)
from workers.page_render import message_page, render

router = APIRouter(include_in_schema=False)
logger = logging.getLogger(__name__)

PRE_SESSION_TTL = 600


@router.get("/ui/static/pages.css")
async def stylesheet() -> Response:
    css = files("workers").joinpath("static/pages.css").read_text()
    return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=300"})


@router.get("/ui/sign-in")
async def sign_in_page(request: Request, next: str = "/ui/gates", why: str = "") -> HTMLResponse:
    return _sign_in_form(request, load_config(), safe_next(next), SIGN_IN_REASONS.get(why, ""))


def _sign_in_form(
    request: Request, config: EngineConfig, next_path: str, why: str, status: int = 200
) -> HTMLResponse:
    """The page, with a fresh value its token form is bound to (login CSRF: a form of
    another site cannot sign a person in as someone else)."""
    bound_to = new_pre_session_value()
    try:
        form_csrf = form_token(config, bound_to)
    except ConfigError as err:
        return message_page("Sign-in unavailable", f"the service cannot sign in: {err}", 503)
    oidc_name = config.oidc.display_name if config.oidc else None
    page = render(
        "sign_in.html",
        status,
        identity=None,
        csrf="",
        why=why,
        next_path=next_path,
        oidc_name=oidc_name,
        form_csrf=form_csrf,
    )
    page.set_cookie(
        PRE_SESSION_COOKIE,
        bound_to,
        max_age=PRE_SESSION_TTL,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request, config),
        path="/ui/sign-in",
    )
    return page


@router.post("/ui/sign-in/token")
async def sign_in_with_token(request: Request) -> Response:
    config = load_config()
    bound_to = request.cookies.get(PRE_SESSION_COOKIE, "")
    try:
        if not bound_to:
            raise FormRefusedError("open the sign-in page and sign in from there", 403)
        fields = await checked_form(request, config, bound_to)
    except FormRefusedError as err:
        return message_page("Sign-in refused", str(err), err.status, [("/ui/sign-in", "Sign in")])
    next_path = safe_next(fields.get("next"))
    try:
        identity = identify(config, fields.get("token", ""))
    except AuthenticationFailedError:
        why = "That token matches no identity in the config: check it and try again."
        return _sign_in_form(request, config, next_path, why, status=401)
    return _signed_in(request, config, identity, "token", (), next_path)


@router.get("/ui/oidc/login")
async def oidc_login(request: Request, next: str = "/ui/gates") -> Response:
    config = load_config()
    if config.oidc is None:
        return message_page(
            "No single sign-on",
            "single sign-on is not configured ([oidc]): sign in with your token",
            404,
            [("/ui/sign-in", "Sign in")],
        )
    try:
        url, pending = await oidc.start(config, config.oidc, safe_next(next))
    except oidc.SignInRefusedError as err:
        return message_page("Sign-in unavailable", str(err), err.status)
    except ConfigError as err:
        return message_page("Sign-in unavailable", f"[oidc] cannot be used: {err}", 503)
    answer = RedirectResponse(url, status_code=303)
    answer.set_cookie(
        oidc.PENDING_COOKIE,
        pending,
        max_age=int(oidc.PENDING_TTL.total_seconds()),
        httponly=True,
        # Lax: the provider sends the browser back with a top-level GET from its own site.
        samesite="lax",
        secure=secure_cookies(request, config),
        path="/ui/oidc",
    )
    return answer


@router.get("/ui/oidc/callback")
async def oidc_callback(
    request: Request,
    code: str = "",
    state: str = "",
    error: str = "",
    error_description: str = "",
    iss: str = "",
) -> Response:
    config = load_config()
    again = [("/ui/oidc/login", "Sign in again")]
    if config.oidc is None:
        return message_page("No single sign-on", "single sign-on is not configured", 404)
    if error:
        said = f"{error}: {error_description}" if error_description else error
        return message_page(
            "Sign-in refused", f"the identity provider refused the sign-in ({said[:200]})", 403,
            again,
        )  # fmt: skip
    if iss and iss.rstrip("/") != config.oidc.issuer:  # RFC 9207: another provider's answer
        return message_page(
            "Sign-in refused", "this answer comes from another identity provider", 400, again
        )
    try:
        pending = oidc.pending_sign_in(config, request.cookies.get(oidc.PENDING_COOKIE), state)
        if not code:
            raise oidc.SignInRefusedError("the provider sent no code: sign in again", 400)
        claims = await oidc.finish(config, config.oidc, pending, code)
        person = oidc.person_for(config.oidc, claims)
    except oidc.SignInRefusedError as err:
        logger.warning("single sign-on refused: %s", err)
        return _without_pending(
            message_page("Sign-in refused", str(err), err.status, again), request, config
        )
    except ConfigError as err:
        return message_page("Sign-in unavailable", f"[oidc] cannot be used: {err}", 503)
    logger.info("%s signed in to the pages as %s", person.claimed_as, person.identity)
    answer = _signed_in(
        request, config, person.identity, "oidc", person.idp_groups, pending.next_path
    )
    return _without_pending(answer, request, config)


@router.post("/ui/sign-out")
async def sign_out(request: Request) -> Response:
    config = load_config()
    try:
        session = page_session(request, config)
        await checked_form(request, config, session.session_id)
    except SignInNeeded as needed:
        return sign_in_redirect("/ui/gates", needed.reason)
    except FormRefusedError as err:
        return message_page("Sign-out refused", str(err), err.status)
    answer = sign_in_redirect("/ui/gates", "signed-out")
    clear_session_cookie(answer, secure=secure_cookies(request, config))
    return answer


def _signed_in(
    request: Request,
    config: EngineConfig,
    identity: str,
    method: SignInMethod,
    idp_groups: tuple[str, ...],
    next_path: str,
) -> Response:
    ttl = config.pages.session_ttl_seconds
    try:
        token = issue_session(
            config,
            identity,
            datetime.now(UTC),
            ttl=timedelta(seconds=ttl),
            signed_in_with=method,
            idp_groups=idp_groups,
        )
    except ConfigError as err:
        return message_page("Sign-in unavailable", f"the service cannot sign sessions: {err}", 503)
    answer = RedirectResponse(safe_next(next_path), status_code=303)
    secure = secure_cookies(request, config)
    set_session_cookie(answer, token, ttl, secure=secure, same_site="lax")
    answer.delete_cookie(PRE_SESSION_COOKIE, path="/ui/sign-in", secure=secure, httponly=True)
    return answer


def _without_pending(answer: Response, request: Request, config: EngineConfig) -> Response:
    """A sign-in's state is used once: the callback clears it whatever the outcome."""
    answer.delete_cookie(
        oidc.PENDING_COOKIE, path="/ui/oidc", secure=secure_cookies(request, config), httponly=True
    )
    return answer
