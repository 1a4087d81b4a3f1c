"""Deliveries already taken, remembered for a while: PagerDuty delivers at least once and
repeats `X-Webhook-Id` on every retry of a delivery, so a retry we already took can be
answered without reaching Temporal again.

A hint, not a guarantee: the cache is per process, bounded, and forgets after its TTL. A miss
costs only a duplicate attached to the run (its audit says "fired again"); exactly one run per
incident still comes from Temporal's workflow id. A delivery is remembered only once it was
taken, so a retry after a 503 is never mistaken for a duplicate.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_TTL_SECONDS = 3600.0
DEFAULT_MAX_ENTRIES = 10_000


class DeliveryCache:
    def __init__(
        self,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds, self.max_entries, self.clock = ttl_seconds, max_entries, clock
        self._taken: OrderedDict[str, float] = OrderedDict()  # key -> when, oldest first

    def seen(self, key: str) -> bool:
        self._expire()
        return key in self._taken

    def remember(self, key: str) -> None:
        self._taken[key] = self.clock()
        self._taken.move_to_end(key)
        while len(self._taken) > self.max_entries:
            self._taken.popitem(last=False)

    def _expire(self) -> None:
        horizon = self.clock() - self.ttl_seconds
        while self._taken and next(iter(self._taken.values())) < horizon:
            self._taken.popitem(last=False)
