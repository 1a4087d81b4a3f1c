"""The alert intake: POST /alerts/alertmanager | grafana | pagerduty | generic. Each route
authenticates the raw bytes as its sender signs them (see `workers.http_common`), only then
parses the payload, and dispatches every alert in it to Temporal (`workers.dispatch`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, HTTPException, Request
from pydantic import BaseModel, Field, ValidationError
from temporalio.service import RPCError

from activities.config import EngineConfig, load_config
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
from workers.dispatch import Dispatcher, Outcome
from workers.http_common import (
    WEBHOOK_RESPONSES,
    check_hmac,
    configured_secrets,
    read_body,
    refuse,
)
from workers.metrics import ALERTS, RUNS_STARTED
from workers.replay import DeliveryCache
from workers.webhook_auth import credential_matches, versioned_signatures

log = logging.getLogger(__name__)
router = APIRouter()

T = TypeVar("T", bound=BaseModel)


class IntakeResult(BaseModel):
    accepted: int
    results: list[dict[str, str | None]] = Field(default_factory=list)
    # True: a redelivery of one already taken; answered so the sender stops, nothing started.
    duplicate_delivery: bool = False


def _parse(model: type[T], body: bytes, source: str) -> T:
    try:
        return model.model_validate_json(body)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in err.errors()
        )
        raise refuse(source, "malformed", 422, f"not a {source} payload: {problems}") from None


async def _dispatch_all(request: Request, source: str, alerts: list[IncomingAlert]) -> IntakeResult:
    config: EngineConfig = load_config()
    dispatcher: Dispatcher = request.app.state.dispatcher
    try:
        if len(alerts) == 1:  # the common case, without a gather's task
            done = [await dispatcher.dispatch(config, alerts[0])]
        else:
            done = list(await asyncio.gather(*(dispatcher.dispatch(config, a) for a in alerts)))
    except RPCError as err:
        # Temporal is unreachable: a 503 makes the sender retry, so nothing valid is lost.
        raise HTTPException(
            status_code=503, detail=f"cannot reach Temporal: {err.message}"
        ) from None
    for result in done:
        ALERTS.labels(source, result.outcome.value).inc()
        if result.outcome == Outcome.STARTED:
            RUNS_STARTED.labels(result.runbook or "").inc()
            log.info("%s alert %s started %s", source, result.fingerprint, result.workflow_id,
                     extra={"workflow_id": result.workflow_id})  # fmt: skip
    return IntakeResult(accepted=len(done), results=[d.as_dict() for d in done])


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Document the payload without letting FastAPI parse it: authentication is checked on
    the raw bytes first, so an unauthenticated request never reaches the parser."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@router.post(
    "/alerts/alertmanager",
    status_code=202,
    responses=WEBHOOK_RESPONSES,
    openapi_extra=_body_schema(AlertmanagerPayload),
)
async def alertmanager(
    request: Request, authorization: Annotated[str, Header()] = ""
) -> IntakeResult:
    """Alertmanager webhook (payload version 4). Alertmanager cannot sign, so it sends a
    bearer token or basic auth (`http_config`)."""
    config = load_config()
    tokens = configured_secrets(config.intake.alertmanager_tokens, "alertmanager")
    if not credential_matches(authorization, tokens):
        raise refuse("alertmanager", "unauthenticated", 401, "missing or wrong credential")
    payload = _parse(AlertmanagerPayload, await read_body(request, "alertmanager"), "alertmanager")
    return await _dispatch_all(
        request, "alertmanager", from_prometheus_style("alertmanager", payload)
    )


@router.post(
    "/alerts/grafana",
    status_code=202,
    responses=WEBHOOK_RESPONSES,
    openapi_extra=_body_schema(GrafanaPayload),
)
async def grafana(request: Request) -> IntakeResult:
    """Grafana webhook contact point with an HMAC-SHA256 signature (hex) in the configured
    header; once `grafana_timestamp_header` is configured, Grafana signs `timestamp:body`, and
    the timestamp must be present and recent."""
    intake = load_config().intake
    signature = request.headers.get(intake.grafana_signature_header, "")
    body = await read_body(request, "grafana")
    if intake.grafana_timestamp_header is None:
        check_hmac("grafana", intake.grafana_secrets, body, [signature])
    else:
        # Configured: required, so a captured request cannot be replayed without it.
        timestamp = request.headers.get(intake.grafana_timestamp_header, "")
        signed = f"{timestamp}:".encode() + body
        check_hmac("grafana", intake.grafana_secrets, signed, [signature], timestamp)
    payload = _parse(GrafanaPayload, body, "grafana")
    return await _dispatch_all(request, "grafana", from_prometheus_style("grafana", payload))


@router.post(
    "/alerts/pagerduty",
    status_code=202,
    responses=WEBHOOK_RESPONSES,
    openapi_extra=_body_schema(PagerDutyPayload),
)
async def pagerduty(
    request: Request,
    signature: Annotated[str, Header(alias="X-PagerDuty-Signature")] = "",
    webhook_id: Annotated[str, Header(alias="X-Webhook-Id")] = "",
) -> IntakeResult:
    """PagerDuty V3 webhook: `X-PagerDuty-Signature: v1=<hex>[,v1=<hex>...]`, HMAC-SHA256 of
    the raw body; several signatures while a secret rotates. A redelivery (same event, or
    same `X-Webhook-Id`) already taken is answered 202 `duplicate_delivery` and reaches no run
    (`workers.replay`)."""
    body = await read_body(request, "pagerduty")
    secrets = load_config().intake.pagerduty_secrets
    check_hmac("pagerduty", secrets, body, versioned_signatures(signature))
    payload = _parse(PagerDutyPayload, body, "pagerduty")
    deliveries: DeliveryCache = request.app.state.deliveries
    # The event id is signed; X-Webhook-Id is not, but PagerDuty repeats it on each retry.
    keys = [f"pagerduty-event:{payload.event.id}"]
    keys += [f"pagerduty-webhook:{webhook_id}"] if webhook_id else []
    if any(deliveries.seen(key) for key in keys):
        ALERTS.labels("pagerduty", "duplicate_delivery").inc()
        return IntakeResult(accepted=0, duplicate_delivery=True)
    result = await _dispatch_all(request, "pagerduty", from_pagerduty(payload))
    for key in keys:  # only once taken: a retry after a 503 must get through
        deliveries.remember(key)
    return result


@router.post(
    "/alerts/generic",
    status_code=202,
    responses=WEBHOOK_RESPONSES,
    openapi_extra=_body_schema(GenericAlert),
)
async def generic(
    request: Request,
    signature: Annotated[str, Header(alias="X-Remediate-Signature")] = "",
    timestamp: Annotated[str, Header(alias="X-Remediate-Timestamp")] = "",
) -> IntakeResult:
    """Our schema (GenericAlert). Sign `{timestamp}.{body}` with HMAC-SHA256 and send
    `X-Remediate-Timestamp: <unix seconds>` and `X-Remediate-Signature: v1=<hex>`."""
    body = await read_body(request, "generic")
    signed = f"{timestamp}.".encode() + body
    secrets = load_config().intake.generic_secrets
    check_hmac("generic", secrets, signed, versioned_signatures(signature), timestamp)
    payload = _parse(GenericAlert, body, "generic")
    return await _dispatch_all(request, "generic", from_generic(payload))
