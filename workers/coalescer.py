"""Batch the duplicates of a firing alert that is already attached to a running run.

A storm repeats one alert thousands of times. Once this process has seen Temporal record the
alert on its run (started or attached, within `fresh_seconds`), each further duplicate of it
(same route, workflow id and fingerprint) is answered at once and counted into a batch; one
signal per key and window carries the count and the first and last received times, so the
run's audit accounts for every duplicate without one RPC each.

Nothing here decides correctness: the flush is the dispatcher's signal-with-start, so a run
that ended meanwhile gets a new run, and exactly one run per incident still comes from
Temporal's workflow-id conflict policy. A cold or forgotten key only costs RPCs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from activities.config import RouteConfig
from workers.metrics import COALESCE_FLUSHES, COALESCED_LOST
from workflows.models import AlertSignal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoalescePolicy:
    window_seconds: float = 0.25  # how long a batch collects before its one signal
    fresh_seconds: float = 10.0  # how long a key counts as attached after Temporal said so
    attempts: int = 6  # deliveries of a batch before it is given up (logged and counted)
    first_backoff_seconds: float = 0.5  # doubled after each failed attempt
    max_keys: int = 10_000  # keys remembered as attached (the oldest are forgotten)


@dataclass(frozen=True)
class Key:
    route: str
    workflow_id: str
    fingerprint: str


@dataclass
class Batch:
    """Duplicates of one key received in one window, delivered as one signal."""

    route: RouteConfig
    latest: AlertSignal
    first_received_at: datetime
    count: int = 1
    due: asyncio.Event = field(default_factory=asyncio.Event)

    def signal(self) -> AlertSignal:
        return self.latest.model_copy(
            update={"count": self.count, "first_received_at": self.first_received_at}
        )


Deliver = Callable[[Batch], Awaitable[None]]


class Coalescer:
    def __init__(self, deliver: Deliver, policy: CoalescePolicy) -> None:
        self._deliver = deliver
        self._policy = policy
        self._attached: OrderedDict[Key, float] = OrderedDict()
        self._pending: dict[Key, Batch] = {}
        self._tasks: dict[Key, set[asyncio.Task[None]]] = {}

    def confirmed(self, key: Key) -> None:
        """Temporal recorded a firing alert of `key` on a running run just now."""
        self._attached[key] = time.monotonic()
        self._attached.move_to_end(key)
        while len(self._attached) > self._policy.max_keys:
            self._attached.popitem(last=False)

    def forget(self, key: Key) -> None:
        """The next alert of `key` goes to Temporal itself (it resolved, or a flush failed)."""
        self._attached.pop(key, None)

    def offer(self, key: Key, route: RouteConfig, signal: AlertSignal) -> bool:
        """Take a firing duplicate into its key's batch; False when it must go to Temporal."""
        seen = self._attached.get(key)
        if seen is None or time.monotonic() - seen > self._policy.fresh_seconds:
            return False
        batch = self._pending.get(key)
        if batch is None:
            batch = self._pending[key] = Batch(route, signal, signal.received_at)
            task = asyncio.get_running_loop().create_task(self._flush(key, batch))
            tasks = self._tasks.setdefault(key, set())
            tasks.add(task)
            task.add_done_callback(lambda done: self._done(key, done))
        else:
            batch.latest = signal
            batch.count += 1
        return True

    async def drain(self, key: Key) -> None:
        """Deliver what is batched for `key` now and wait for it: a resolution must reach
        the run after the duplicates received before it."""
        if (batch := self._pending.get(key)) is not None:
            batch.due.set()
        await asyncio.gather(*self._tasks.get(key, ()), return_exceptions=True)

    async def close(self, grace_seconds: float) -> None:
        """Deliver every pending batch (at shutdown); what does not make it is counted lost."""
        for batch in self._pending.values():
            batch.due.set()
        tasks = [task for tasks in self._tasks.values() for task in tasks]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=grace_seconds)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    def _done(self, key: Key, task: asyncio.Task[None]) -> None:
        tasks = self._tasks.get(key)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._tasks[key]

    async def _flush(self, key: Key, batch: Batch) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(batch.due.wait(), self._policy.window_seconds)
        if self._pending.get(key) is batch:
            del self._pending[key]
        try:
            await self._deliver_with_retries(key, batch)
        except asyncio.CancelledError:
            self._lost(key, batch, "the service stopped before Temporal answered")
            raise

    async def _deliver_with_retries(self, key: Key, batch: Batch) -> None:
        backoff = self._policy.first_backoff_seconds
        for attempt in range(1, self._policy.attempts + 1):
            try:
                await self._deliver(batch)
            except Exception as err:  # any failure is retried, then counted
                # Until Temporal answers again, duplicates go to it themselves (and get its
                # 503), rather than piling up behind this batch.
                self.forget(key)
                COALESCE_FLUSHES.labels("retried").inc()
                log.warning("delivering %d duplicates of %s failed (attempt %d): %s",
                            batch.count, key, attempt, err)  # fmt: skip
                if attempt == self._policy.attempts:
                    self._lost(key, batch, str(err))
                    return
                await asyncio.sleep(backoff)
                backoff *= 2
            else:
                COALESCE_FLUSHES.labels("delivered").inc()
                self.confirmed(key)
                return

    def _lost(self, key: Key, batch: Batch, why: str) -> None:
        self.forget(key)
        COALESCE_FLUSHES.labels("failed").inc()
        COALESCED_LOST.inc(batch.count)
        log.error("gave up delivering %d duplicates of %s to its run: %s", batch.count, key, why)
