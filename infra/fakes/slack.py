"""A local fake of Slack's Web API: the two methods a Slack app's bot token calls here.

Shapes follow https://api.slack.com/methods/chat.postMessage and
https://api.slack.com/methods/chat.update: `POST /api/<method>` with a JSON body and
`Authorization: Bearer <bot token>`; answers are HTTP 200 with `{"ok": true, ...}` or
`{"ok": false, "error": "<code>"}`, except rate limiting, HTTP 429 with `Retry-After` and
`{"ok": false, "error": "ratelimited"}`.

- `chat.postMessage` `{"channel", "text", "blocks", "thread_ts", "reply_broadcast"}` ->
  `{"ok", "channel", "ts", "message"}`. Errors: `not_authed`, `invalid_auth`,
  `channel_not_found` (a channel not in the scenario), `no_text`, `thread_not_found`.
- `chat.update` `{"channel", "ts", "text", "blocks"}` -> `{"ok", "channel", "ts", "text",
  "message"}`; `blocks` left out keeps the message's blocks, `[]` removes them. Errors: as
  above, and `message_not_found`.

Control API (not Slack's): `POST /_fake/scenario` (see `Scenario`), `GET /_fake/state`
(every message by channel with its `thread_ts`, `reply_broadcast` and edits, and every call).

Run: `python -m infra.fakes.slack --port 8792` (the app's `api_url` is then
`http://127.0.0.1:8792/api`).
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

app = FastAPI(title="fake Slack Web API")


class Scenario(BaseModel):
    token: str = "xoxb-fake-bot-token"  # noqa: S105 - a fake's default, not a secret
    channels: list[str] = Field(default_factory=lambda: ["C0REMEDIATE"])
    rate_limit_next: int = 0
    retry_after_seconds: int = 1


@dataclass
class _State:
    scenario: Scenario = field(default_factory=Scenario)
    # channel -> ts -> message
    messages: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    rate_limit_left: int = 0
    clock: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


STATE = _State()


def _fail(error: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": error})


def _refused(request: Request, body: dict[str, Any]) -> JSONResponse | None:
    """Slack's checks in its order: rate limit, token, channel."""
    if STATE.rate_limit_left > 0:
        STATE.rate_limit_left -= 1
        return JSONResponse(
            {"ok": False, "error": "ratelimited"},
            status_code=429,
            headers={"Retry-After": str(STATE.scenario.retry_after_seconds)},
        )
    auth = request.headers.get("Authorization")
    if not auth:
        return _fail("not_authed")
    if auth != f"Bearer {STATE.scenario.token}":
        return _fail("invalid_auth")
    if body.get("channel") not in STATE.messages:
        return _fail("channel_not_found")
    return None


async def _body(request: Request, method: str) -> dict[str, Any]:
    body = await request.json()
    body = body if isinstance(body, dict) else {}
    STATE.calls.append({"method": method, "body": body})
    return body


@app.post("/api/chat.postMessage")
async def post_message(request: Request) -> Any:
    body = await _body(request, "chat.postMessage")
    refused = _refused(request, body)
    if refused is not None:
        return refused
    if not body.get("text") and not body.get("blocks"):
        return _fail("no_text")
    channel = STATE.messages[body["channel"]]
    thread_ts = body.get("thread_ts")
    if thread_ts is not None and thread_ts not in channel:
        return _fail("thread_not_found")
    ts = f"1700000000.{next(STATE.clock):06d}"
    message = {
        "type": "message",
        "ts": ts,
        "text": body.get("text", ""),
        "blocks": body.get("blocks", []),
        "thread_ts": thread_ts,
        "reply_broadcast": bool(body.get("reply_broadcast")),
        "edits": 0,
    }
    channel[ts] = message
    return {"ok": True, "channel": body["channel"], "ts": ts, "message": message}


@app.post("/api/chat.update")
async def update_message(request: Request) -> Any:
    body = await _body(request, "chat.update")
    refused = _refused(request, body)
    if refused is not None:
        return refused
    message = STATE.messages[body["channel"]].get(str(body.get("ts")))
    if message is None:
        return _fail("message_not_found")
    if "text" in body:
        message["text"] = body["text"]
    if "blocks" in body:
        message["blocks"] = body["blocks"]
    message["edits"] += 1
    return {
        "ok": True,
        "channel": body["channel"],
        "ts": message["ts"],
        "text": message["text"],
        "message": message,
    }


@app.post("/_fake/scenario")
async def set_scenario(scenario: Scenario) -> dict[str, str]:
    STATE.scenario = scenario
    STATE.messages = {c: {} for c in scenario.channels}
    STATE.calls = []
    STATE.rate_limit_left = scenario.rate_limit_next
    return {"status": "ok"}


@app.get("/_fake/state")
async def state() -> dict[str, Any]:
    return {
        "messages": {c: list(m.values()) for c, m in STATE.messages.items()},
        "calls": STATE.calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8792)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
