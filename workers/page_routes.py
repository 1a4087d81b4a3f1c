"""The approval pages (server-rendered, no script), for a person signed in with a browser
session (`workers/sign_in_routes.py`):

    GET  /ui/gates                       the open gates
    GET  /ui/gates/{workflow_id}         one gate: the plan, its effects, blast radius and
                                         policy, the diagnosis's evidence, who started the
                                         run, its timeline, the quorum, the deadline
    POST /ui/gates/{workflow_id}/decide  Approve or Reject, with a reason
    GET  /ui/runs                        recent runs
    GET  /ui/runs/{workflow_id}          a run: its timeline and, once it ended, its record

The paths of the gate and run pages are `activities/links.py`'s, which notifications link to.
A decision made here takes the API's path (`workers.approvals.decide_as`): the service checks
that the plan, run and gate are the ones the page showed, signs the decision for the
signed-in identity with the groups its sign-in established, and sends it to the gate, which
applies group, four-eyes and quorum policy itself.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from activities.config import ConfigError, EngineConfig, load_config
from activities.links import run_page_url
from workers import page_views
from workers.approvals import DecisionError, decide_as
from workers.browser_sessions import BrowserSession
from workers.csrf import form_token
from workers.http_common import TEMPORAL_DOWN, temporal_client, why_unreachable
from workers.metrics import DECISIONS
from workers.page_auth import (
    FormRefusedError,
    SignInNeeded,
    checked_form,
    page_session,
    sign_in_redirect,
)
from workers.page_render import message_page, render
from workers.team_stats import DEFAULT_SINCE, SinceError, parse_since, team_stats
from workflows.incident_record import incident_record

router = APIRouter(include_in_schema=False)
logger = logging.getLogger(__name__)

MAX_REASON = 2000
GATES = [("/ui/gates", "Open gates")]


def _temporal_down(err: Exception) -> Response:
    how = why_unreachable(err) if isinstance(err, TEMPORAL_DOWN) else "unavailable"
    return message_page(
        "Temporal did not answer",
        f"Temporal did not answer ({how}): reload shortly; if it lasts, check that the "
        "Temporal server is up and a worker is running",
        503,
    )


def _signed_in(
    request: Request, config: EngineConfig, come_back_to: str | None = None
) -> BrowserSession | Response:
    """The session, or the answer to give instead: off to sign in (then back to
    `come_back_to`, by default this page)."""
    try:
        return page_session(request, config)
    except SignInNeeded as needed:
        return sign_in_redirect(come_back_to or request.url.path, needed.reason)
    except ConfigError as err:
        return message_page("Unavailable", f"the service cannot verify sessions: {err}", 503)


def _page_context(config: EngineConfig, session: BrowserSession) -> dict[str, str]:
    return {"identity": session.identity, "csrf": form_token(config, session.session_id)}


@router.get("/ui")
async def home() -> Response:
    return RedirectResponse("/ui/gates", status_code=303)


@router.get("/ui/gates")
async def gates_page(request: Request) -> Response:
    config = load_config()
    session = _signed_in(request, config)
    if isinstance(session, Response):
        return session
    try:
        gates = await page_views.open_gates(temporal_client(request))
    except TEMPORAL_DOWN as err:
        return _temporal_down(err)
    return render("gates.html", gates=gates, **_page_context(config, session))


@router.get("/ui/gates/{workflow_id}")
async def gate_page(request: Request, workflow_id: str) -> Response:
    config = load_config()
    session = _signed_in(request, config)
    if isinstance(session, Response):
        return session
    context = _page_context(config, session)
    run_link = [(f"/ui/runs/{workflow_id}", "The run"), *GATES]
    try:
        page = await page_views.gate_page(temporal_client(request), config, workflow_id)
    except DecisionError as err:
        return message_page("No such run", str(err), err.status, GATES, **context)
    except TEMPORAL_DOWN as err:
        return _temporal_down(err)
    if page is None:
        return message_page(
            "No gate open",
            f"{workflow_id} has no gate waiting for a decision now: it may have been decided, "
            "or the run is between gates or has ended",
            404,
            run_link,
            **context,
        )
    return render(
        "gate.html",
        gate=page.gate,
        policy=page.policy,
        run=page.run,
        evidence=page.evidence,
        may_approve=page.policy.required_group in session.groups,
        **context,
    )


@router.post("/ui/gates/{workflow_id}/decide")
async def decide_on_page(request: Request, workflow_id: str) -> Response:
    """The page's Approve or Reject: only from the page (CSRF token of this session, this
    site's Origin), only on the plan, run and gate it showed."""
    config = load_config()
    # Signed out meanwhile: sign in and review the gate again (nothing is decided unseen).
    session = _signed_in(request, config, come_back_to=f"/ui/gates/{workflow_id}")
    if isinstance(session, Response):
        return session
    context = _page_context(config, session)
    back = [(f"/ui/gates/{workflow_id}", "Back to the gate"), *GATES]
    try:
        fields = await checked_form(request, config, session.session_id)
        kind, plan_id, shown, reason = _decision_fields(fields)
    except FormRefusedError as err:
        DECISIONS.labels("form", "forged" if err.status == 403 else "malformed").inc()
        logger.warning("refused a page form for %s by %s: %s", workflow_id, session.identity, err)
        return message_page("Not decided", str(err), err.status, back, **context)
    try:
        decision = await decide_as(
            temporal_client(request),
            config,
            session.identity,
            workflow_id,
            kind,
            reason,
            plan_id,
            shown_gate=shown,
            groups=session.groups,
        )
    except DecisionError as err:
        DECISIONS.labels(kind, "refused").inc()
        logger.warning("refused %s of %s by %s: %s", kind, workflow_id, session.identity, err)
        title = "The plan changed" if err.status == 409 else "Not decided"
        return message_page(title, str(err), err.status, back, **context)
    except ConfigError as err:
        return message_page("Not decided", f"the service cannot sign decisions: {err}", 503)
    except TEMPORAL_DOWN as err:
        DECISIONS.labels(kind, "unavailable").inc()
        return _temporal_down(err)
    DECISIONS.labels(kind, decision.outcome.value).inc()
    return render("decided.html", decision=decision, kind=kind, workflow_id=workflow_id, **context)


def _decision_fields(
    fields: dict[str, str],
) -> tuple[Literal["approve", "reject"], str, tuple[str, int], str]:
    kind = fields.get("kind", "")
    if kind not in ("approve", "reject"):
        raise FormRefusedError("press Approve or Reject on the gate's page", 422)
    plan_id, run_id, gate = fields.get("plan_id", ""), fields.get("run_id", ""), fields.get("gate")
    if not plan_id or len(plan_id) > 64 or not run_id or len(run_id) > 64:
        raise FormRefusedError("the form does not say which plan you reviewed: reload it", 422)
    if gate is None or not gate.isdigit() or len(gate) > 9:
        raise FormRefusedError("the form does not say which gate you reviewed: reload it", 422)
    reason = fields.get("reason", "").strip()
    if len(reason) > MAX_REASON:
        raise FormRefusedError(f"the reason is longer than {MAX_REASON} characters", 422)
    if kind == "reject" and not reason:
        raise FormRefusedError("a rejection needs a reason: say why, then press Reject", 422)
    return ("approve" if kind == "approve" else "reject"), plan_id, (run_id, int(gate)), reason


@router.get("/ui/runs")
async def runs_page(request: Request) -> Response:
    config = load_config()
    session = _signed_in(request, config)
    if isinstance(session, Response):
        return session
    try:
        runs = await page_views.recent_runs(temporal_client(request))
    except TEMPORAL_DOWN as err:
        return _temporal_down(err)
    return render("runs.html", runs=runs, **_page_context(config, session))


@router.get("/ui/runs/{workflow_id}")
async def run_page(request: Request, workflow_id: str) -> Response:
    config = load_config()
    session = _signed_in(request, config)
    if isinstance(session, Response):
        return session
    context = _page_context(config, session)
    try:
        run = await page_views.run_view(temporal_client(request), config, workflow_id)
    except DecisionError as err:
        return message_page("No such run", str(err), err.status, GATES, **context)
    except TEMPORAL_DOWN as err:
        return _temporal_down(err)
    record = None
    if run.closed_at and run.report:  # the incident record, once the run has ended
        record = incident_record(run.report, run_page_url(config, workflow_id))
    return render("run.html", run=run, incident_record=record, **context)


@router.get("/ui/runs/{workflow_id}/record.json")
async def run_record(request: Request, workflow_id: str) -> Response:
    """The run's report as JSON, for the page's reader to keep or paste."""
    config = load_config()
    session = _signed_in(request, config)
    if isinstance(session, Response):
        return session
    try:
        run = await page_views.run_view(temporal_client(request), config, workflow_id)
    except DecisionError as err:
        return JSONResponse({"error": str(err)}, status_code=err.status)
    except TEMPORAL_DOWN as err:
        return _temporal_down(err)
    if run.report is None:
        return JSONResponse({"error": f"{workflow_id} has no report"}, status_code=404)
    return JSONResponse(run.report.model_dump(mode="json"), headers={"Cache-Control": "no-store"})


@router.get("/ui/stats")
async def stats_page(request: Request, since: str = DEFAULT_SINCE) -> Response:
    """The team's numbers per runbook over a period (`since`: 7d, 24h, or a time)."""
    config = load_config()
    session = _signed_in(request, config)
    if isinstance(session, Response):
        return session
    context = _page_context(config, session)
    try:
        start = parse_since(since[:40], datetime.now(UTC))
    except SinceError as err:
        return message_page(
            "Which period?", str(err), 422, [("/ui/stats", "Last 7 days")], **context
        )
    try:
        numbers = await team_stats(temporal_client(request), start)
    except TEMPORAL_DOWN as err:
        return _temporal_down(err)
    return render("stats.html", stats=numbers, since_text=since[:40], **context)
