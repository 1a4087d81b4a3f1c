"""The intake and approval HTTP service: one ASGI app, stateless (all state is in Temporal).

    POST /alerts/alertmanager | /alerts/grafana | /alerts/pagerduty | /alerts/generic
    GET  /approvals, POST /approvals/{workflow_id}/approve|reject
    GET  /healthz, GET /metrics

Run: `uvicorn workers.service:app` (or `remediate-service`), with REMEDIATE_CONFIG set.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Annotated, Any, Literal, TypeVar

from fastapi import BackgroundTasks, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest
from pydantic import BaseModel, Field, ValidationError
from temporalio.client import Client
from temporalio.service import RPCError

from activities.approval_auth import AuthenticationFailedError, identify
from activities.config import EngineConfig, SecretRef, load_config
from activities.secrets.references import resolve_secret
from workers.alert_payloads import (
    AlertmanagerPayload,
    GenericAlert,
    GrafanaPayload,
    IncomingAlert,
    PagerDutyPayload,
    from_generic,
    from_pagerduty,
    from_prometheus_style,
)
from workers.approvals import DecisionError, decide, end_hold, pending_gates
from workers.dispatch import Dispatched, Outcome, dispatch
from workers.settings import Settings, connect
from workers.slack_interactions import InteractionError, handle_click, parse_interaction
from workers.webhook_auth import (
    any_signature_matches,
    credential_matches,
    timestamp_fresh,
    versioned_signatures,
)
from workflows.models import ApprovalDecision, GateView, RunStatus

MAX_BODY_BYTES = 1 << 20

ALERTS = Counter("remediate_alerts_total", "Alerts received", ["source", "outcome"])
REJECTED = Counter("remediate_webhooks_rejected_total", "Webhooks refused", ["source", "reason"])
RUNS_STARTED = Counter("remediate_runs_started_total", "Runs started by alerts", ["runbook"])
DECISIONS = Counter("remediate_decisions_total", "Decisions via the API", ["kind", "result"])
GATES_PENDING = Gauge("remediate_gates_pending", "Gates awaiting approval")
RUN_OUTCOMES = Gauge(
    "remediate_runs_finished", "Finished remediations by outcome (from Temporal)", ["status"]
)
OUTCOMES = (
    RunStatus.REMEDIATED,
    RunStatus.ESCALATED,
    RunStatus.ABORTED,
    RunStatus.REJECTED,
    RunStatus.RESOLVED,
    RunStatus.NO_ACTION_NEEDED,
    RunStatus.DRY_RUN,
)

T = TypeVar("T", bound=BaseModel)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = Settings()
    load_config()  # a broken config stops start-up with its own message
    app.state.settings = settings
    app.state.client = await connect(settings)
    yield


app = FastAPI(title="Remediation engine: intake and approvals", lifespan=lifespan)


class ErrorBody(BaseModel):
    error: str


class IntakeResult(BaseModel):
    accepted: int
    results: list[dict[str, str | None]] = Field(default_factory=list)


class DecisionBody(BaseModel):
    plan_id: str = Field(min_length=1, max_length=64, description="the plan you reviewed")
    reason: str = Field(default="", max_length=2000)


def _client(request: Request) -> Client:
    client: Client = request.app.state.client
    return client


def _refuse(source: str, reason: str, status: int, message: str) -> HTTPException:
    REJECTED.labels(source, reason).inc()
    return HTTPException(status_code=status, detail=message)


async def _body(request: Request, source: str) -> bytes:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise _refuse(source, "too_large", 413, "payload larger than 1 MiB")
    return body


def _secrets(refs: list[SecretRef], source: str) -> list[str]:
    if not refs:
        raise _refuse(
            source, "not_configured", 401, f"{source} intake has no credential configured"
        )
    return [resolve_secret(ref) for ref in refs]


def _check_hmac(
    source: str,
    refs: list[SecretRef],
    signed: bytes,
    signatures: list[str],
    timestamp: str | None = None,
) -> None:
    """The sender's signature over `signed`, under any configured secret; where the sender
    signs a timestamp (`timestamp` not None), it must also be inside the window."""
    config = load_config()
    secrets = _secrets(refs, source)
    window = config.intake.timestamp_tolerance_seconds
    if timestamp is not None and not timestamp_fresh(timestamp, time.time(), window):
        raise _refuse(source, "stale", 401, "missing timestamp or outside the accepted window")
    if not any_signature_matches(secrets, signed, signatures):
        raise _refuse(source, "unauthenticated", 401, "missing or wrong signature")


def _parse(model: type[T], body: bytes, source: str) -> T:
    try:
        return model.model_validate_json(body)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in err.errors()
        )
        raise _refuse(source, "malformed", 422, f"not a {source} payload: {problems}") from None


async def _dispatch_all(request: Request, source: str, alerts: list[IncomingAlert]) -> IntakeResult:
    config: EngineConfig = load_config()
    settings: Settings = request.app.state.settings
    try:
        done: list[Dispatched] = await asyncio.gather(
            *(dispatch(_client(request), config, settings.task_queue, a) for a in alerts)
        )
    except RPCError as err:
        # Temporal is unreachable: a 503 makes the sender retry, so nothing valid is lost.
        raise HTTPException(
            status_code=503, detail=f"cannot reach Temporal: {err.message}"
        ) from None
    for result in done:
        ALERTS.labels(source, result.outcome.value).inc()
        if result.outcome == Outcome.STARTED:
            RUNS_STARTED.labels(result.runbook or "").inc()
    return IntakeResult(accepted=len(done), results=[d.as_dict() for d in done])


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Document the payload without letting FastAPI parse it: authentication is checked on
    the raw bytes first, so an unauthenticated request never reaches the parser."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody},
    413: {"model": ErrorBody},
    422: {"model": ErrorBody},
}


@app.post(
    "/alerts/alertmanager",
    status_code=202,
    responses=RESPONSES,
    openapi_extra=_body_schema(AlertmanagerPayload),
)
async def alertmanager(
    request: Request, authorization: Annotated[str, Header()] = ""
) -> IntakeResult:
    """Alertmanager webhook (payload version 4). Alertmanager cannot sign, so it sends a
    bearer token or basic auth (`http_config`)."""
    config = load_config()
    tokens = _secrets(config.intake.alertmanager_tokens, "alertmanager")
    if not credential_matches(authorization, tokens):
        raise _refuse("alertmanager", "unauthenticated", 401, "missing or wrong credential")
    payload = _parse(AlertmanagerPayload, await _body(request, "alertmanager"), "alertmanager")
    return await _dispatch_all(
        request, "alertmanager", from_prometheus_style("alertmanager", payload)
    )


@app.post(
    "/alerts/grafana",
    status_code=202,
    responses=RESPONSES,
    openapi_extra=_body_schema(GrafanaPayload),
)
async def grafana(request: Request) -> IntakeResult:
    """Grafana webhook contact point with an HMAC-SHA256 signature (hex) in the configured
    header; when a timestamp header is configured, Grafana signs `timestamp:body`, and the
    timestamp must also be recent."""
    intake = load_config().intake
    signature = request.headers.get(intake.grafana_signature_header, "")
    timestamp = request.headers.get(intake.grafana_timestamp_header) or None
    body = await _body(request, "grafana")
    signed = f"{timestamp}:".encode() + body if timestamp else body
    _check_hmac("grafana", intake.grafana_secrets, signed, [signature], timestamp)
    payload = _parse(GrafanaPayload, body, "grafana")
    return await _dispatch_all(request, "grafana", from_prometheus_style("grafana", payload))


@app.post(
    "/alerts/pagerduty",
    status_code=202,
    responses=RESPONSES,
    openapi_extra=_body_schema(PagerDutyPayload),
)
async def pagerduty(
    request: Request,
    signature: Annotated[str, Header(alias="X-PagerDuty-Signature")] = "",
) -> IntakeResult:
    """PagerDuty V3 webhook: `X-PagerDuty-Signature: v1=<hex>[,v1=<hex>...]`, HMAC-SHA256 of
    the raw body; several signatures while a secret rotates."""
    body = await _body(request, "pagerduty")
    secrets = load_config().intake.pagerduty_secrets
    _check_hmac("pagerduty", secrets, body, versioned_signatures(signature))
    payload = _parse(PagerDutyPayload, body, "pagerduty")
    return await _dispatch_all(request, "pagerduty", from_pagerduty(payload))


@app.post(
    "/alerts/generic",
    status_code=202,
    responses=RESPONSES,
    openapi_extra=_body_schema(GenericAlert),
)
async def generic(
    request: Request,
    signature: Annotated[str, Header(alias="X-Remediate-Signature")] = "",
    timestamp: Annotated[str, Header(alias="X-Remediate-Timestamp")] = "",
) -> IntakeResult:
    """Our schema (GenericAlert). Sign `{timestamp}.{body}` with HMAC-SHA256 and send
    `X-Remediate-Timestamp: <unix seconds>` and `X-Remediate-Signature: v1=<hex>`."""
    body = await _body(request, "generic")
    signed = f"{timestamp}.".encode() + body
    secrets = load_config().intake.generic_secrets
    _check_hmac("generic", secrets, signed, versioned_signatures(signature), timestamp)
    payload = _parse(GenericAlert, body, "generic")
    return await _dispatch_all(request, "generic", from_generic(payload))


# -- approvals ----------------------------------------------------------------------------


def _caller(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(status_code=401, detail="send Authorization: Bearer <your token>")
    return token.strip()


@app.get("/approvals", responses={401: {"model": ErrorBody}})
async def list_approvals(
    request: Request, authorization: Annotated[str, Header()] = ""
) -> list[GateView]:
    config = load_config()
    token = _caller(authorization)
    try:
        identify(config, token)
    except AuthenticationFailedError as err:
        raise HTTPException(status_code=401, detail=str(err)) from None
    gates = await pending_gates(_client(request))
    GATES_PENDING.set(len(gates))
    return gates


@app.post(
    "/approvals/{workflow_id}/{kind}",
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 404: {"model": ErrorBody},
               409: {"model": ErrorBody}},
)  # fmt: skip
async def decide_gate(
    request: Request,
    workflow_id: str,
    kind: Literal["approve", "reject"],
    body: DecisionBody,
    authorization: Annotated[str, Header()] = "",
) -> ApprovalDecision:
    """Approve or reject the plan you reviewed (its plan_id), as your token's identity."""
    config = load_config()
    token = _caller(authorization)
    if kind == "reject" and not body.reason:
        raise HTTPException(status_code=422, detail="a rejection needs a reason")
    try:
        decision = await decide(
            _client(request), config, token, workflow_id, kind, body.reason, body.plan_id
        )
    except AuthenticationFailedError as err:
        DECISIONS.labels(kind, "unauthenticated").inc()
        raise HTTPException(status_code=401, detail=str(err)) from None
    except DecisionError as err:
        DECISIONS.labels(kind, "refused").inc()
        raise HTTPException(status_code=err.status, detail=str(err)) from None
    DECISIONS.labels(kind, decision.outcome.value).inc()
    return decision


class EndHoldBody(BaseModel):
    reason: str = Field(default="", max_length=2000)


@app.post(
    "/runs/{workflow_id}/end-hold",
    responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
async def end_read_only_hold(
    request: Request,
    workflow_id: str,
    body: EndHoldBody,
    authorization: Annotated[str, Header()] = "",
) -> dict[str, str]:
    """End a read-only run's hold early; its exit plan then waits for approval at the gate."""
    token = _caller(authorization)
    try:
        result = await end_hold(_client(request), load_config(), token, workflow_id, body.reason)
    except AuthenticationFailedError as err:
        raise HTTPException(status_code=401, detail=str(err)) from None
    except DecisionError as err:
        raise HTTPException(status_code=err.status, detail=str(err)) from None
    return {"result": result}


@app.post("/slack/interactions", responses=RESPONSES)
async def slack_interactions(
    request: Request,
    background: BackgroundTasks,
    signature: Annotated[str, Header(alias="X-Slack-Signature")] = "",
    timestamp: Annotated[str, Header(alias="X-Slack-Request-Timestamp")] = "",
) -> Response:
    """Slack's interactivity Request URL: the Approve / Reject buttons of gate messages."""
    config = load_config()
    body = await _body(request, "slack")
    signed = f"v0:{timestamp}:".encode() + body
    signatures = versioned_signatures(signature, "v0")
    _check_hmac("slack", config.intake.slack_signing_secrets, signed, signatures, timestamp)
    try:
        interaction, value = parse_interaction(body)
    except InteractionError as err:
        raise _refuse("slack", "malformed", 422, str(err)) from None
    background.add_task(handle_click, _client(request), config, interaction, value)
    return Response(status_code=200)


@app.get("/healthz")
async def healthz(request: Request) -> dict[str, str]:
    await _client(request).service_client.check_health()
    return {"status": "ok"}


@app.get("/metrics")
async def metrics(request: Request) -> Response:
    client = _client(request)
    query = "RemediationStatus = 'AwaitingApproval' AND ExecutionStatus = 'Running'"
    with suppress(RPCError):  # metrics still answer when Temporal does not
        pending, *finished = await asyncio.gather(
            client.count_workflows(query),
            *(client.count_workflows(f"RemediationStatus = '{s.value}'") for s in OUTCOMES),
        )
        GATES_PENDING.set(pending.count)
        for status, count in zip(OUTCOMES, finished, strict=True):
            RUN_OUTCOMES.labels(status.value).set(count.count)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@app.exception_handler(HTTPException)
async def _error_body(request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


def main() -> None:
    import uvicorn

    settings = Settings()
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level="info")


if __name__ == "__main__":
    main()
