"""A local fake of PagerDuty's REST API v2: the incident endpoints the engine calls.

Shapes follow PagerDuty's API reference (https://developer.pagerduty.com/api-reference/):
`Authorization: Token token=<key>`, `Accept: application/vnd.pagerduty+json;version=2`, a
`From` header with the email of a valid user on writes, JSON bodies, errors as
`{"error": {"message", "code", "errors": [...]}}`.

- `GET /incidents/{id}`: `{"incident": {"id", "type": "incident", "status", ...}}`.
- `PUT /incidents/{id}` with `{"incident": {"type": "incident_reference", "status":
  "acknowledged"|"resolved"}}`: the updated incident.
- `GET /incidents/{id}/notes`: `{"notes": [{"id", "user", "content", "created_at"}]}`.
- `POST /incidents/{id}/notes` with `{"note": {"content"}}`: 201 `{"note": {...}}`.

Errors: no or a wrong token, 401 (code 2006); an unknown incident, 404 (code 2100); a write
without a `From` header naming one of the scenario's users, 400 (code 2001, "Requester User
Not Found"); an invalid status, 400. Rate limiting: the scenario's `rate_limit_next` requests
are answered 429 (code 2020) with the documented `ratelimit-limit`, `ratelimit-remaining`
and `ratelimit-reset` headers.

Control API (not PagerDuty's): `POST /_fake/scenario` (see `Scenario`), `GET /_fake/state`
(incidents, their notes, and every API request as `{"method", "path", "from"}`).

Run: `python -m infra.fakes.pagerduty --port 8791`.
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

app = FastAPI(title="fake PagerDuty REST API v2")


class Scenario(BaseModel):
    token: str = "pd-test-token"  # noqa: S105 - a fake's default, not a secret
    users: list[str] = Field(default_factory=lambda: ["oncall-bot@example.com"])
    # incident id -> status ("triggered", "acknowledged", "resolved")
    incidents: dict[str, str] = Field(default_factory=dict)
    rate_limit_next: int = 0
    rate_limit_reset_seconds: int = 1


@dataclass
class _State:
    scenario: Scenario = field(default_factory=Scenario)
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    rate_limit_left: int = 0
    ids: itertools.count[int] = field(default_factory=itertools.count)


STATE = _State()


def _error(status: int, code: int, message: str, *errors: str) -> JSONResponse:
    body = {"error": {"message": message, "code": code, "errors": list(errors)}}
    return JSONResponse(body, status_code=status)


def _incident(incident_id: str, status: str) -> dict[str, Any]:
    return {
        "id": incident_id,
        "type": "incident",
        "summary": f"[#{incident_id}] fake incident",
        "status": status,
        "html_url": f"https://fake.pagerduty.com/incidents/{incident_id}",
    }


@app.middleware("http")
async def _guard(request: Request, call_next: Any) -> Any:
    """Every API request: recorded, rate-limited, authenticated; writes need `From`."""
    if request.url.path.startswith("/_fake"):
        return await call_next(request)
    STATE.calls.append(
        {"method": request.method, "path": request.url.path, "from": request.headers.get("From")}
    )
    if STATE.rate_limit_left > 0:
        STATE.rate_limit_left -= 1
        response = _error(429, 2020, "Rate Limit Exceeded")
        reset = str(STATE.scenario.rate_limit_reset_seconds)
        response.headers.update(
            {"ratelimit-limit": "960", "ratelimit-remaining": "0", "ratelimit-reset": reset}
        )
        return response
    if request.headers.get("Authorization") != f"Token token={STATE.scenario.token}":
        return _error(401, 2006, "Authentication failed")
    parts = request.url.path.split("/")
    incident_id = parts[2] if len(parts) > 2 and parts[1] == "incidents" else ""
    if incident_id not in STATE.incidents:
        return _error(404, 2100, "Not Found", f"incident {incident_id} not found")
    if request.method in ("POST", "PUT") and request.headers.get("From") not in (
        STATE.scenario.users
    ):
        return _error(400, 2001, "Invalid Input Provided", "Requester User Not Found")
    return await call_next(request)


@app.get("/incidents/{incident_id}")
async def get_incident(incident_id: str) -> dict[str, Any]:
    return {"incident": STATE.incidents[incident_id]}


@app.put("/incidents/{incident_id}")
async def update_incident(incident_id: str, request: Request) -> Any:
    body = await request.json()
    wanted = body.get("incident", {}) if isinstance(body, dict) else {}
    if wanted.get("type") != "incident_reference" or wanted.get("status") not in (
        "acknowledged",
        "resolved",
    ):
        return _error(400, 2001, "Invalid Input Provided", "Status is not a valid status")
    STATE.incidents[incident_id]["status"] = wanted["status"]
    return {"incident": STATE.incidents[incident_id]}


@app.get("/incidents/{incident_id}/notes")
async def list_notes(incident_id: str) -> dict[str, Any]:
    return {"notes": STATE.notes[incident_id]}


@app.post("/incidents/{incident_id}/notes", status_code=201)
async def create_note(incident_id: str, request: Request) -> Any:
    body = await request.json()
    content = body.get("note", {}).get("content") if isinstance(body, dict) else None
    if not isinstance(content, str) or not content:
        return _error(400, 2001, "Invalid Input Provided", "Note content is required")
    note = {
        "id": f"PNOTE{next(STATE.ids):04d}",
        "user": {
            "id": "PBOTUSR",
            "type": "user_reference",
            "summary": request.headers.get("From"),
        },
        "channel": {"summary": "The PagerDuty REST API"},
        "content": content,
        "created_at": datetime.now(UTC).isoformat(),
    }
    STATE.notes[incident_id].append(note)
    return {"note": note}


@app.post("/_fake/scenario")
async def set_scenario(scenario: Scenario) -> dict[str, str]:
    STATE.scenario = scenario
    STATE.incidents = {i: _incident(i, status) for i, status in scenario.incidents.items()}
    STATE.notes = {i: [] for i in scenario.incidents}
    STATE.calls = []
    STATE.rate_limit_left = scenario.rate_limit_next
    return {"status": "ok"}


@app.get("/_fake/state")
async def state() -> dict[str, Any]:
    return {"incidents": STATE.incidents, "notes": STATE.notes, "calls": STATE.calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8791)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
