"""Browser sign-in: POST /session trades a bearer token for a session cookie
(`workers.browser_sessions`), DELETE /session ends it, GET /session is a page to do so by
hand. The Temporal UI then reaches the codec endpoint with the cookie ("include cross-origin
credentials" in its codec settings)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from activities.config import ConfigError, load_config
from workers.browser_sessions import clear_session_cookie, issue_session, set_session_cookie
from workers.http_common import ErrorBody, caller_identity

router = APIRouter()


class SessionStarted(BaseModel):
    identity: str
    expires_in_seconds: int


@router.post("/session", responses={401: {"model": ErrorBody}, 503: {"model": ErrorBody}})
async def start_session(
    request: Request, response: Response, authorization: Annotated[str, Header()] = ""
) -> SessionStarted:
    """Sign in as your token's identity: answers with an HttpOnly session cookie."""
    identity = caller_identity(authorization)
    config = load_config()
    try:
        token = issue_session(config, identity, datetime.now(UTC))
    except ConfigError as err:
        raise HTTPException(503, f"the service cannot sign sessions: {err}") from None
    ttl = config.codec_server.session_ttl_seconds
    set_session_cookie(response, token, ttl, secure=request.url.scheme == "https")
    return SessionStarted(
        identity=identity, expires_in_seconds=config.codec_server.session_ttl_seconds
    )


@router.delete("/session", status_code=204)
async def end_session(request: Request) -> Response:
    response = Response(status_code=204)
    clear_session_cookie(response, secure=request.url.scheme == "https")
    return response


SIGN_IN_PAGE = """<!doctype html>
<meta charset="utf-8"><title>Sign in: remediation engine</title>
<form id="f"><label>Your token <input id="t" type="password" autocomplete="off"></label>
<button>Sign in</button></form><p id="r"></p>
<script>
document.getElementById("f").onsubmit = async (e) => {
  e.preventDefault();
  const answer = await fetch("/session", {method: "POST",
    headers: {Authorization: "Bearer " + document.getElementById("t").value}});
  const body = await answer.json();
  document.getElementById("r").textContent = answer.ok
    ? "Signed in as " + body.identity + ". The Temporal UI can now decode payloads."
    : body.error;
};
</script>
"""


@router.get("/session", response_class=HTMLResponse)
async def sign_in_page() -> HTMLResponse:
    """A page to sign in by hand (the token goes in a header, never in a URL)."""
    return HTMLResponse(SIGN_IN_PAGE)
