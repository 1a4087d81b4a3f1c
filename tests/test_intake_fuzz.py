"""Property-based fuzzing of every intake endpoint on the running service: whatever arrives,
the answer is never a 5xx, and nothing malformed or unauthenticated starts a run."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.client import Client

from tests import payloads
from tests.support import TOKENS
from tests.test_intake_service import SECRETS, service_process, slack  # noqa: F401 - fixtures

SOURCES = ("alertmanager", "grafana", "pagerduty", "generic")
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


def _mutations(template: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Documented payloads with fields dropped or replaced by arbitrary JSON."""
    return st.fixed_dictionaries(
        {key: st.one_of(st.just(value), json_values) for key, value in template.items()}
    ).flatmap(
        lambda body: st.sets(st.sampled_from(sorted(body)), max_size=3).map(
            lambda dropped: {k: v for k, v in body.items() if k not in dropped}
        )
    )


TEMPLATES: dict[str, dict[str, Any]] = {
    "alertmanager": payloads.alertmanager("firing", {"alertname": "Fuzz", "x": "1"}, "fz"),
    "grafana": payloads.grafana("firing", {"alertname": "Fuzz"}, "fz"),
    "pagerduty": payloads.pagerduty("incident.triggered", "QFUZZ", "fuzz", "fuzz-svc"),
    "generic": payloads.generic("firing", "Fuzz", "fz", {}),
}


def _signed(source: str, raw: bytes) -> dict[str, str]:
    if source == "alertmanager":
        return payloads.bearer(SECRETS["AM_TOKEN_TEST"])
    if source == "grafana":
        return payloads.grafana_signed(SECRETS["GRAFANA_SECRET_TEST"], raw, str(int(time.time())))
    if source == "pagerduty":
        return payloads.pagerduty_signed([SECRETS["PD_SECRET_TEST"]], raw)
    return payloads.generic_signed(SECRETS["GENERIC_SECRET_TEST"], raw)


headers_strategy = st.dictionaries(
    st.sampled_from(
        [
            "Authorization",
            "X-Grafana-Alerting-Signature",
            "X-Grafana-Alerting-Timestamp",
            "X-PagerDuty-Signature",
            "X-Remediate-Signature",
            "X-Remediate-Timestamp",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=80),
    max_size=4,
)


@pytest.fixture(scope="module")
def url(service_process: tuple[str, str]) -> str:  # noqa: F811
    return service_process[0]


@FUZZ
@given(
    source=st.sampled_from(SOURCES),
    body=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()),
    headers=headers_strategy,
)
def test_unauthenticated_input_is_refused_without_5xx(
    url: str, source: str, body: bytes, headers: dict[str, str]
) -> None:
    response = httpx.post(f"{url}/alerts/{source}", content=body, headers=headers, timeout=30)
    assert response.status_code == 401, response.text
    assert "error" in response.json()


@FUZZ
@given(data=st.data(), source=st.sampled_from(SOURCES))
def test_authenticated_malformed_input_never_fails_the_server(
    url: str, data: st.DataObject, source: str
) -> None:
    body = data.draw(_mutations(TEMPLATES[source]))
    raw = json.dumps(body).encode()
    response = httpx.post(
        f"{url}/alerts/{source}", content=raw, headers=_signed(source, raw), timeout=30
    )
    assert response.status_code in (202, 413, 422), response.text
    if response.status_code == 202:
        # Parsed as a real payload: whatever it holds, no route matches the fuzz labels.
        assert {r["outcome"] for r in response.json()["results"]} <= {
            "unrouted",
            "resolved_no_run",
        }


async def test_fuzzing_started_no_run(
    dev_env: Any,
    service_process: tuple[str, str],  # noqa: F811
) -> None:
    client: Client = dev_env.client
    query = f"TaskQueue = '{service_process[1]}' AND ExecutionStatus = 'Running'"
    running = [w.id async for w in client.list_workflows(query)]
    assert running == []


@FUZZ
@given(
    workflow_id=st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_0123456789", min_size=1, max_size=40),
    kind=st.sampled_from(["approve", "reject", "delete", "APPROVE"]),
    body=json_values,
    token=st.sampled_from(["", "Bearer nope", "Basic Zm9vOmJhcg==", f"Bearer {TOKENS['bob']}"]),
)
def test_approval_endpoints_never_fail_the_server(
    url: str, workflow_id: str, kind: str, body: Any, token: str
) -> None:
    response = httpx.post(
        f"{url}/approvals/{workflow_id}/{kind}",
        json=body,
        headers={"Authorization": token} if token else {},
        timeout=30,
    )
    assert response.status_code in (401, 404, 409, 422), response.text
