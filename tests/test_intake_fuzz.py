"""Property-based fuzzing of every endpoint on the running service, bodies and headers (header
values as raw bytes: non-ASCII, invalid UTF-8, odd prefixes; and raw requests no client would
send): whatever arrives, the answer is never a 5xx, an error is JSON, and nothing malformed or
unauthenticated starts a run (checked last, over everything the module sent)."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from typing import Any
from urllib.parse import quote, urlsplit

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


# --- every endpoint, headers as raw bytes ------------------------------------------------------

ENDPOINTS: list[tuple[str, str]] = [
    ("POST", "/alerts/alertmanager"),
    ("POST", "/alerts/grafana"),
    ("POST", "/alerts/pagerduty"),
    ("POST", "/alerts/generic"),
    ("POST", "/slack/interactions"),
    ("GET", "/approvals"),
    ("GET", "/approvals/{id}"),
    ("POST", "/approvals/{id}/approve"),
    ("POST", "/approvals/{id}/reject"),
    ("POST", "/runs"),
    ("POST", "/runs/{id}/end-hold"),
    ("GET", "/safety"),
    ("POST", "/safety/pause"),
    ("POST", "/safety/resume"),
    ("GET", "/healthz"),
    ("GET", "/livez"),
    ("GET", "/metrics"),
    ("POST", "/no/such/endpoint"),
    ("DELETE", "/approvals"),
]
HEADER_NAMES = [
    "Authorization",
    "Content-Type",
    "X-Grafana-Alerting-Signature",
    "X-Grafana-Alerting-Timestamp",
    "X-PagerDuty-Signature",
    "X-Webhook-Id",
    "X-Remediate-Signature",
    "X-Remediate-Timestamp",
    "X-Slack-Signature",
    "X-Slack-Request-Timestamp",
]
# Bytes a client may put in a header value (no CR, LF, NUL; h11 refuses those itself): ASCII
# and the whole latin-1 upper half, so invalid UTF-8 and non-ASCII both arrive.
VALUE_BYTES = [bytes([b]) for b in (*range(0x21, 0x7F), *range(0x80, 0x100))]
header_values = st.tuples(
    st.sampled_from([b"", b"v1=", b"v0=", b"Basic ", b"Bearer ", b"sha256="]),
    st.lists(st.sampled_from(VALUE_BYTES), max_size=40).map(b"".join),
).map(lambda parts: b"".join(parts).strip())  # h11 refuses edge whitespace itself
NASTY_BODIES = [
    b"\xff",
    b'{"plan_id": "\\ud800", "reason": "\\udfff"}',
    b'{"plan_id": "\xff\xfe"}',
    b'{"runbook": "pool_restart", "target": "\\ud800"}',
    b"[" * 2000,
    b"",
]
bodies = (
    st.sampled_from(NASTY_BODIES)
    | st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
)
# Never a token that could decide or pause: the fuzzed requests are all invalid input. Bob's
# valid token goes only where nothing can be decided (no gate is open in this module).
TOKEN_HEADERS = [b"", b"Bearer nope", b"Basic \xff", b"Bearer \xe9\xe9"]
workflow_ids = st.text(max_size=40) | st.sampled_from(["remediation-safety-x", "x" * 2000])


@pytest.fixture(scope="module")
def http(url: str) -> Any:
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


@FUZZ
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    workflow_id=workflow_ids,
    headers=st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_values), max_size=4),
    token=st.sampled_from(TOKEN_HEADERS),
    body=bodies,
)
def test_every_endpoint_with_raw_header_bytes_never_fails(
    http: httpx.Client,
    endpoint: tuple[str, str],
    workflow_id: str,
    headers: list[tuple[str, bytes]],
    token: bytes,
    body: bytes,
) -> None:
    method, template = endpoint
    path = template.replace("{id}", quote(workflow_id, safe="") or "x")
    raw = [(name.encode(), value) for name, value in headers]
    if token:
        raw.append((b"Authorization", token))
    response = http.request(method, path, content=body, headers=raw)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["error"], response.text


@FUZZ
@given(
    path=st.sampled_from([p.replace("{id}", "x") for _, p in ENDPOINTS]),
    header_line=st.binary(min_size=1, max_size=60),
    length=st.sampled_from([b"5", b"-1", b"abc", b"99999999999999999999", b"5, 6", b"\xff"]),
)
def test_raw_requests_no_client_would_send_never_fail(
    url: str, path: str, header_line: bytes, length: bytes
) -> None:
    """A header line of arbitrary bytes (NUL, CR, no colon) and odd Content-Lengths: the HTTP
    server may refuse them itself (a 400 of its own), but nothing answers 5xx."""
    parts = urlsplit(url)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n".encode()
        + b"X-Fuzz: " + header_line + b"\r\n"
        + b"Content-Length: " + length + b"\r\n\r\n{}"
    )  # fmt: skip
    answer = b""
    with socket.create_connection((parts.hostname or "", parts.port or 80), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            while more := sock.recv(65536):
                answer += more
    if answer:  # a server may also just close the connection on a request it cannot parse
        status = int(answer.split(b" ", 2)[1])
        assert status < 500, answer


# Last in the module, so it covers everything the tests above sent.
async def test_fuzzing_started_no_run(
    dev_env: Any,
    service_process: tuple[str, str],  # noqa: F811
) -> None:
    client: Client = dev_env.client
    query = f"TaskQueue = '{service_process[1]}'"  # any status: not even one that ended
    started = [w.id async for w in client.list_workflows(query)]
    assert started == []
