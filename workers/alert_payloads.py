"""The senders' documented webhook payloads, and their translation into our `AlertContext`.

Each model validates what we rely on and ignores the rest, so a sender adding fields does not
break intake; a payload missing what we rely on is a 422 that says which field.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from workflows.models import AlertContext

AlertStatus = Literal["firing", "resolved"]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class IncomingAlert(BaseModel):
    status: AlertStatus
    alert: AlertContext


# -- Alertmanager (webhook_config, payload version 4) and Grafana (same alert shape) ---------


class PrometheusStyleAlert(_Lenient):
    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime | None = None
    endsAt: datetime | None = None
    generatorURL: str = ""
    fingerprint: str = ""


class AlertmanagerPayload(_Lenient):
    version: str
    groupKey: str
    status: AlertStatus
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    truncatedAlerts: int = 0
    alerts: list[PrometheusStyleAlert]


class GrafanaPayload(AlertmanagerPayload):
    orgId: int | None = None
    title: str = ""
    state: str = ""
    message: str = ""


def _fingerprint(alert: PrometheusStyleAlert) -> str:
    if alert.fingerprint:
        return alert.fingerprint
    # Alertmanager always sends one; derive a stable one from the labels otherwise.
    canonical = ",".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def from_prometheus_style(
    source: Literal["alertmanager", "grafana"], payload: AlertmanagerPayload
) -> list[IncomingAlert]:
    return [
        IncomingAlert(
            status=alert.status,
            alert=AlertContext(
                source=source,
                name=alert.labels.get("alertname", ""),
                fingerprint=_fingerprint(alert),
                labels={**payload.commonLabels, **alert.labels},
                summary=alert.annotations.get("summary")
                or alert.annotations.get("description", ""),
                starts_at=alert.startsAt,
            ),
        )
        for alert in payload.alerts
    ]


# -- PagerDuty V3 webhooks ------------------------------------------------------------------


class PagerDutyReference(_Lenient):
    id: str = ""
    summary: str = ""


class PagerDutyIncident(_Lenient):
    id: str
    type: str = "incident"
    title: str = ""
    status: str = ""
    urgency: str = ""
    incident_key: str | None = None
    created_at: datetime | None = None
    html_url: str = ""
    service: PagerDutyReference | None = None
    priority: PagerDutyReference | None = None


class PagerDutyEvent(_Lenient):
    id: str
    event_type: str
    resource_type: str
    occurred_at: datetime
    data: PagerDutyIncident


class PagerDutyPayload(_Lenient):
    event: PagerDutyEvent


PAGERDUTY_STATUS: dict[str, AlertStatus] = {
    "incident.triggered": "firing",
    "incident.resolved": "resolved",
}


def from_pagerduty(payload: PagerDutyPayload) -> list[IncomingAlert]:
    """incident.triggered and incident.resolved; other event types are not alerts."""
    status = PAGERDUTY_STATUS.get(payload.event.event_type)
    if status is None or payload.event.resource_type != "incident":
        return []
    incident = payload.event.data
    labels = {
        "title": incident.title,
        "urgency": incident.urgency,
        "service": incident.service.summary if incident.service else "",
        "service_id": incident.service.id if incident.service else "",
        "priority": incident.priority.summary if incident.priority else "",
        "incident_key": incident.incident_key or "",
    }
    return [
        IncomingAlert(
            status=status,
            alert=AlertContext(
                source="pagerduty",
                name=incident.title,
                fingerprint=incident.id,
                labels={k: v for k, v in labels.items() if v},
                summary=incident.title,
                starts_at=incident.created_at,
            ),
        )
    ]


# -- Our generic webhook --------------------------------------------------------------------


class GenericAlert(BaseModel):
    """POST /alerts/generic: one alert, signed with HMAC (see README)."""

    model_config = ConfigDict(extra="forbid")

    status: AlertStatus
    name: str = Field(min_length=1, max_length=200)
    fingerprint: str = Field(min_length=1, max_length=200)
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str = Field(default="", max_length=2000)
    # When the problem began, if the sender knows (ISO 8601 with a zone); else the run's own
    # detection time stands in for it.
    starts_at: AwareDatetime | None = None


def from_generic(payload: GenericAlert) -> list[IncomingAlert]:
    return [
        IncomingAlert(
            status=payload.status,
            alert=AlertContext(
                source="generic",
                name=payload.name,
                fingerprint=payload.fingerprint,
                labels={"alertname": payload.name, **payload.labels},
                summary=payload.summary,
                starts_at=payload.starts_at,
            ),
        )
    ]
