"""The senders' documented webhook payloads and signatures, built the way each sender does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from workers.webhook_auth import hmac_sha256_hex


def alertmanager(status: str, labels: dict[str, str], fingerprint: str) -> dict[str, Any]:
    """Alertmanager webhook_config payload, version 4."""
    alert = {
        "status": status,
        "labels": labels,
        "annotations": {"summary": f"{labels.get('alertname')} on {labels.get('service')}"},
        "startsAt": "2026-11-23T03:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-23T03:20:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=pg_connections",
        "fingerprint": fingerprint,
    }
    return {
        "version": "4",
        "groupKey": '{}:{alertname="' + labels.get("alertname", "") + '"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "remediation",
        "groupLabels": {"alertname": labels.get("alertname", "")},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [alert],
    }


def grafana(status: str, labels: dict[str, str], fingerprint: str) -> dict[str, Any]:
    """Grafana unified alerting webhook payload (Alertmanager's shape plus Grafana's fields)."""
    body = alertmanager(status, labels, fingerprint)
    body["alerts"][0].update(
        {
            "values": {"B": 97.0},
            "valueString": "[ var='B' labels={} value=97 ]",
            "silenceURL": "http://grafana:3000/alerting/silence/new",
            "dashboardURL": "",
            "panelURL": "",
        }
    )
    body.update(
        {
            "orgId": 1,
            "title": f"[{status.upper()}:1] {labels.get('alertname')}",
            "state": "alerting" if status == "firing" else "ok",
            "message": "connections exhausted",
        }
    )
    return body


def pagerduty(event_type: str, incident_id: str, title: str, service: str) -> dict[str, Any]:
    """PagerDuty V3 webhook event envelope for an incident."""
    return {
        "event": {
            "id": uuid.uuid4().hex[:14].upper(),
            "event_type": event_type,
            "resource_type": "incident",
            "occurred_at": "2026-11-23T03:00:00.000Z",
            "agent": {"html_url": "", "id": "PLH1HKV", "self": "", "summary": "Tenex Engineer",
                      "type": "user_reference"},
            "client": None,
            "data": {
                "id": incident_id,
                "type": "incident",
                "self": f"https://api.pagerduty.com/incidents/{incident_id}",
                "html_url": f"https://acme.pagerduty.com/incidents/{incident_id}",
                "number": 2,
                "status": "triggered" if event_type == "incident.triggered" else "resolved",
                "incident_key": f"key-{incident_id}",
                "created_at": "2026-11-23T03:00:00Z",
                "title": title,
                "service": {"html_url": "", "id": "PF9KMXH", "self": "", "summary": service,
                            "type": "service_reference"},
                "assignees": [],
                "escalation_policy": {"id": "PUS0KTE", "summary": "Default",
                                      "type": "escalation_policy_reference"},
                "teams": [],
                "priority": {"id": "PSO75BM", "summary": "P1", "type": "priority_reference"},
                "urgency": "high",
                "conference_bridge": None,
                "resolve_reason": None,
            },
        }
    }  # fmt: skip


def generic(status: str, name: str, fingerprint: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"status": status, "name": name, "fingerprint": fingerprint, "labels": labels}


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"alertmanager:{token}".encode()).decode()}


def grafana_signed(secret: str, raw: bytes, timestamp: str | None = None) -> dict[str, str]:
    signed = f"{timestamp}:".encode() + raw if timestamp else raw
    headers = {"X-Grafana-Alerting-Signature": hmac_sha256_hex(secret, signed)}
    if timestamp:
        headers["X-Grafana-Alerting-Timestamp"] = timestamp
    return headers


def pagerduty_signed(secrets: list[str], raw: bytes) -> dict[str, str]:
    signatures = ",".join(
        "v1=" + hmac.new(s.encode(), raw, hashlib.sha256).hexdigest() for s in secrets
    )
    return {"X-PagerDuty-Signature": signatures}


def generic_signed(secret: str, raw: bytes, at: float | None = None) -> dict[str, str]:
    timestamp = str(int(at if at is not None else time.time()))
    signature = hmac_sha256_hex(secret, f"{timestamp}.".encode() + raw)
    return {"X-Remediate-Timestamp": timestamp, "X-Remediate-Signature": f"v1={signature}"}
