"""The worker heartbeats every activity that has a heartbeat timeout for as long as it runs.

Why: Temporal learns that a worker died (SIGKILL, out of memory, a node lost) only when one of
the activity's timeouts passes. Without heartbeats that is the start-to-close timeout, which
must cover the slowest honest run of the step (minutes); with them it is the heartbeat
timeout (`workflows/policies.py:HEARTBEAT_TIMEOUT`, seconds). Heartbeating inside each
activity would need every await of every step to be wrapped; here it is done once, whatever
the step is waiting on (an HTTP call, SQL, a lease update on the envelope).

What it sends: the latest details the activity itself heartbeated (or, before it has, the
details the previous attempt left), so a retry reads what it would have read without the
keep-alive. Activities marked `@heartbeats.records_details` (terminate_sessions) are left
alone: they record their details on the server directly, where a keep-alive heartbeat sent
later would put older ones back; they keep themselves alive.

Cancellation: the SDK delivers a cancellation (of the run, or of the activity) in the answer
to a heartbeat; keep-alive heartbeats mean every activity with a heartbeat timeout now hears
of it, within one heartbeat. A heartbeat sent after the cancellation arrived is dropped by the
SDK once the attempt is done, and is harmless before.

Cost: nothing for an activity that ends within `heartbeats.interval()` (2 s): its first
keep-alive would come after that. A longer one sends one heartbeat to the server per SDK
throttle interval (80% of the heartbeat timeout), whatever the keep-alive's pace.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from activities import heartbeats


class KeepAlive(Interceptor):
    """The worker interceptor: heartbeats activities with a heartbeat timeout as they run."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _KeepAliveInbound(next)


class _LatestDetails(ActivityOutboundInterceptor):
    """Passes the activity's own heartbeats on, remembering the details of the latest."""

    def __init__(self, next: ActivityOutboundInterceptor) -> None:
        super().__init__(next)
        self.latest: tuple[Any, ...] | None = None  # None: the activity has not heartbeated

    def heartbeat(self, *details: Any) -> None:
        self.latest = details
        super().heartbeat(*details)

    def resend(self, inherited: tuple[Any, ...]) -> None:
        """Heartbeat the latest details again (`inherited` if the activity gave none yet)."""
        super().heartbeat(*(inherited if self.latest is None else self.latest))


class _KeepAliveInbound(ActivityInboundInterceptor):
    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        self.outbound = _LatestDetails(outbound)
        super().init(self.outbound)

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.heartbeat_timeout is None or heartbeats.records_own_details(input.fn):
            return await super().execute_activity(input)
        beating = asyncio.create_task(self._keep_alive(tuple(info.heartbeat_details)))
        try:
            with heartbeats.kept_alive():
                return await super().execute_activity(input)
        finally:
            beating.cancel()

    async def _keep_alive(self, inherited: tuple[Any, ...]) -> None:
        # Two or three heartbeats per heartbeat timeout (heartbeats.interval): one may be
        # late (a busy event loop) without the attempt being taken for dead.
        while True:
            await asyncio.sleep(heartbeats.interval())
            self.outbound.resend(inherited)
