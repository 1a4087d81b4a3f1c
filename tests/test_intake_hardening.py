"""The service's front door under bad input, on the real service process: odd header bytes,
undecodable bodies, oversized bodies (refused before they are read, with the process's memory
barely moving), a decision aimed at a workflow that is not a remediation, and replayed
deliveries. Every answer is JSON, none is a 5xx, and nothing starts a run."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from activities.safety import safety_workflow_id
from tests import payloads
from tests.support import TOKENS, eventually
from tests.test_intake_service import (  # noqa: F401 - fixtures
    SECRETS,
    TARGETS,
    Service,
    gate_open,
    outcomes,
    post,
    service,
    service_process,
    slack,
)
from workers.replay import DeliveryCache

ODD_HEADERS: list[tuple[str, bytes]] = [
    ("X-PagerDuty-Signature", b"v1=\xe9"),
    ("X-Grafana-Alerting-Signature", b"\xe9\xff"),
    ("X-Remediate-Signature", b"v1=\xe9"),
    ("X-Slack-Signature", b"v0=\xff\xfe"),
    ("Authorization", b"Basic \xff"),
    ("Authorization", b"Bearer \xe9t\xe9"),
    ("X-Remediate-Timestamp", b"\xff"),
]
ENDPOINTS = (
    "/alerts/alertmanager",
    "/alerts/grafana",
    "/alerts/pagerduty",
    "/alerts/generic",
    "/slack/interactions",
)


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(("name", "value"), ODD_HEADERS)
def test_odd_header_bytes_are_refused_not_crashed_on(
    service_process: tuple[str, str],  # noqa: F811
    path: str,
    name: str,
    value: bytes,
) -> None:
    url = service_process[0]
    headers = [(name.encode(), value)]  # bytes: httpx refuses a non-ASCII str header
    response = httpx.post(f"{url}{path}", content=b"{}", headers=headers, timeout=30)
    assert response.status_code == 401, response.text
    assert response.json()["error"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b"\xff"),
        ("application/json", b'{"plan_id": "\\ud800", "reason": "\\ud800"}'),
        ("application/json", b'{"plan_id": "\xff\xfe"}'),
        ("application/json", b"[1, 2"),
    ],
)
@pytest.mark.parametrize("path", ["/approvals/x/approve", "/runs/x/end-hold", "/runs"])
def test_undecodable_bodies_get_a_422_that_does_not_echo_them(
    service_process: tuple[str, str],  # noqa: F811
    path: str,
    content_type: str,
    body: bytes,
) -> None:
    url = service_process[0]
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {TOKENS['bob']}"}
    response = httpx.post(f"{url}{path}", content=body, headers=headers, timeout=30)
    assert response.status_code in (400, 422), response.text  # 400: JSON, but not UTF-8
    error = response.json()["error"]
    assert isinstance(error, str) and "\n" not in error
    assert "input" not in response.json()


async def test_a_decision_on_the_safety_envelope_is_not_a_remediation(
    service: Service,  # noqa: F811
    service_process: tuple[str, str],  # noqa: F811
) -> None:
    envelope = safety_workflow_id(service_process[1])
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        bob = payloads.bearer(TOKENS["bob"])
        assert (await http.get("/safety", headers=bob)).status_code == 200  # starts it
        for method, path, body in (
            ("POST", f"/approvals/{envelope}/approve", {"plan_id": "0123456789abcdef"}),
            ("POST", f"/approvals/{envelope}/reject", {"plan_id": "abc", "reason": "no"}),
            ("GET", f"/approvals/{envelope}", None),
            ("POST", f"/runs/{envelope}/end-hold", {"reason": "x"}),
        ):
            response = await http.request(method, path, json=body, headers=bob)
            assert response.status_code == 404, (path, response.text)
            assert "not a remediation run" in response.json()["error"]


# --- bounded input ---------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def _send_huge(url: str, path: str, total: int, chunked: bool) -> tuple[int, bytes]:
    """POST `total` bytes as fast as the server takes them, stopping as soon as it answers;
    the status and body of its answer."""
    parts = urlsplit(url)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"{framing}\r\n\r\n"
    ).encode()
    block = b"x" * 65536
    chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n" if chunked else block
    answer = b""
    with socket.create_connection((parts.hostname or "", parts.port or 80), timeout=30) as sock:
        sock.sendall(head)
        sent = 0
        while sent < total:
            readable, _, _ = select.select([sock], [sock], [], 30)
            if readable:
                break  # the server answered before the body ended: read it at once
            try:
                sock.sendall(chunk)
            except OSError:
                break
            sent += len(block)
        with contextlib.suppress(OSError):
            while more := sock.recv(65536):
                answer += more
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line, f"no answer from {path} (sent {sent} bytes)"
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_200_mb_unauthenticated_body_is_refused_without_being_read(
    service_process: tuple[str, str],  # noqa: F811
    chunked: bool,
) -> None:
    url = service_process[0]
    pid = service_pid(url)
    before = _rss_kib(pid)
    status, body = _send_huge(url, "/alerts/grafana", 200 * 1024 * 1024, chunked)
    after = _rss_kib(pid)
    assert status == 413
    assert "1 MiB" in json.loads(body)["error"]
    assert after - before < 10 * 1024, f"RSS grew {after - before} KiB"


def service_pid(url: str) -> int:
    """The pid of the process listening on the service's port."""
    port = urlsplit(url).port
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inode = fields[9]
    assert inode is not None, f"nothing listens on {port}"
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                if fd.readlink().name == f"socket:[{inode}]":
                    return int(fd_dir.parent.name)
        except OSError:
            continue
    raise AssertionError(f"no process owns the socket on {port}")


@pytest.mark.parametrize(
    "path", ["/approvals/x/approve", "/runs/x/end-hold", "/runs", "/slack/interactions"]
)
def test_every_body_reading_endpoint_refuses_an_oversized_body(
    service_process: tuple[str, str],  # noqa: F811
    path: str,
) -> None:
    url = service_process[0]
    for chunked in (False, True):
        status, body = _send_huge(url, path, 8 * 1024 * 1024, chunked)
        assert status == 413, (path, chunked, body)
        assert json.loads(body)["error"]


# --- replays ---------------------------------------------------------------------------------


async def test_a_pagerduty_redelivery_is_answered_and_starts_nothing_more(
    service: Service,  # noqa: F811
) -> None:
    workflow_id = "pool_restart-pd-db"
    raw = payloads.encode(payloads.pagerduty("incident.triggered", "QRPL", "replay", "orders-api"))
    signed = payloads.pagerduty_signed([SECRETS["PD_SECRET_TEST"]], raw)
    delivery = {**signed, "X-Webhook-Id": f"wh-{time.time_ns()}"}
    assert outcomes(await post(service, "pagerduty", raw, delivery)) == ["started"]
    await eventually(lambda: gate_open(service, workflow_id))
    replayed = await post(service, "pagerduty", raw, delivery)
    assert replayed.status_code == 202, replayed.text
    assert replayed.json()["duplicate_delivery"] is True and replayed.json()["results"] == []
    # The same event under another webhook id is the same delivery too (the event id is
    # signed, the webhook id is not).
    relabelled = {**signed, "X-Webhook-Id": f"wh-{time.time_ns()}"}
    assert (await post(service, "pagerduty", raw, relabelled)).json()["duplicate_delivery"]
    # A new event of the same incident still attaches: the audit then holds exactly one
    # duplicate, so the replays before it reached no run.
    again = payloads.encode(payloads.pagerduty("incident.triggered", "QRPL", "again", "orders-api"))
    fresh = payloads.pagerduty_signed([SECRETS["PD_SECRET_TEST"]], again)
    # Delivered to the run: at once, or batched with a duplicate's signal (the run is fresh).
    assert outcomes(await post(service, "pagerduty", again, fresh)) in (["attached"], ["coalesced"])

    async def duplicates() -> int:
        return [s.kind for s in (await service.report(workflow_id)).steps].count("alert_duplicate")

    assert await eventually(duplicates) == 1


async def test_grafana_needs_a_recent_timestamp_once_its_header_is_configured(
    service: Service,  # noqa: F811
) -> None:
    secret = SECRETS["GRAFANA_SECRET_TEST"]
    raw = payloads.encode(payloads.grafana("firing", {"alertname": "DBConnectionsHigh"}, "ts"))
    without = await post(service, "grafana", raw, payloads.grafana_signed(secret, raw))
    assert without.status_code == 401 and "timestamp" in without.json()["error"]
    old = str(int(time.time()) - 3600)
    stale = await post(service, "grafana", raw, payloads.grafana_signed(secret, raw, old))
    assert stale.status_code == 401 and "timestamp" in stale.json()["error"]
    assert not await service.running("pool_restart-grafana-db")


async def test_generic_signatures_older_or_newer_than_the_window_are_refused(
    service: Service,  # noqa: F811
) -> None:
    secret = SECRETS["GENERIC_SECRET_TEST"]
    raw = payloads.encode(payloads.generic("firing", "QueuePoolLimit", "win", {}))
    for at in (time.time() - 301, time.time() + 301):
        response = await post(service, "generic", raw, payloads.generic_signed(secret, raw, at))
        assert response.status_code == 401 and "timestamp" in response.json()["error"]
    no_timestamp = payloads.generic_signed(secret, raw)
    del no_timestamp["X-Remediate-Timestamp"]
    response = await post(service, "generic", raw, no_timestamp)
    assert response.status_code == 401
    # No run received it (another test may have left generic-db's run open: look inside).
    workflow_id = "pool_restart-generic-db"
    if await service.running(workflow_id):
        steps = (await service.report(workflow_id)).steps
        assert not [s for s in steps if (s.details.get("alert") or {}).get("fingerprint") == "win"]
        assert not [s for s in steps if s.details.get("fingerprint") == "win"]


def test_the_delivery_cache_forgets_after_its_ttl_and_stays_bounded() -> None:
    now = [0.0]
    cache = DeliveryCache(ttl_seconds=60, max_entries=3, clock=lambda: now[0])
    cache.remember("a")
    assert cache.seen("a") and not cache.seen("b")
    now[0] = 61
    assert not cache.seen("a")  # expired: a late retry attaches as a duplicate, nothing worse
    for key in "bcde":
        cache.remember(key)
    assert not cache.seen("b") and all(cache.seen(k) for k in "cde")
