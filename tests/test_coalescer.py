"""The coalescer's delivery policy without Temporal: a failed flush is retried with backoff,
and one that keeps failing is counted and logged, and its key goes back to Temporal."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import REGISTRY

from activities.config import RouteConfig
from workers.coalescer import Batch, CoalescePolicy, Coalescer, Key
from workflows.models import AlertContext, AlertSignal

POLICY = CoalescePolicy(window_seconds=0.01, attempts=3, first_backoff_seconds=0.01)
KEY = Key("r", "pool_restart-db", "f1")
ROUTE = RouteConfig(name="r", runbook="pool_restart", target="db")


def signal() -> AlertSignal:
    alert = AlertContext(source="alertmanager", name="A", fingerprint="f1")
    return AlertSignal(status="firing", alert=alert, received_at=datetime.now(UTC))


class FlakyRun:
    """A run whose first `failures` deliveries fail, as while Temporal is unreachable."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.delivered: list[AlertSignal] = []

    async def deliver(self, batch: Batch) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("Temporal unreachable")
        self.delivered.append(batch.signal())


def counted(metric: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(metric, labels or {}) or 0.0


async def test_a_failed_flush_is_retried_and_delivers_the_whole_batch() -> None:
    run = FlakyRun(failures=2)
    coalescer = Coalescer(run.deliver, POLICY)
    coalescer.confirmed(KEY)
    retried = counted("remediate_coalesce_flushes_total", {"result": "retried"})
    assert all(coalescer.offer(KEY, ROUTE, signal()) for _ in range(4))
    await coalescer.close(grace_seconds=5)
    assert [s.count for s in run.delivered] == [4]
    assert counted("remediate_coalesce_flushes_total", {"result": "retried"}) == retried + 2


async def test_a_flush_that_keeps_failing_is_counted_lost_and_its_key_forgotten() -> None:
    run = FlakyRun(failures=POLICY.attempts)
    coalescer = Coalescer(run.deliver, POLICY)
    coalescer.confirmed(KEY)
    lost = counted("remediate_coalesced_alerts_lost_total")
    assert coalescer.offer(KEY, ROUTE, signal()) and coalescer.offer(KEY, ROUTE, signal())
    await coalescer.close(grace_seconds=5)
    assert run.delivered == []
    assert counted("remediate_coalesced_alerts_lost_total") == lost + 2
    assert not coalescer.offer(KEY, ROUTE, signal())  # Temporal answers the next one itself
