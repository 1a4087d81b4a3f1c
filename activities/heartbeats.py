"""Heartbeats that fit the work: often enough for the heartbeat timeout the workflow gave, and,
where a retry relies on them, recorded on the server before the work they describe.

The SDK throttles `activity.heartbeat`: an attempt's first heartbeat is sent at once, later
ones at most every 80% of the heartbeat timeout, each carrying the latest details. Calling it
every `interval()` keeps an attempt alive; but details passed to it can still be waiting in
the worker when the worker dies, so a retry cannot rely on them. `record` is for what a retry
must know (what an attempt was about to do): it returns only once the server has it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from temporalio import activity
from temporalio.client import AsyncActivityCancelledError

T = TypeVar("T")

# How often a long step heartbeats when its heartbeat timeout allows it.
HEARTBEAT_SECONDS = 2.0


def interval() -> float:
    """Seconds between heartbeats: HEARTBEAT_SECONDS, or a third of a shorter heartbeat
    timeout, so two can be missed before the server gives the attempt up (outside an
    activity: HEARTBEAT_SECONDS, for the caller's own progress checks)."""
    timeout = activity.info().heartbeat_timeout if activity.in_activity() else None
    if not timeout:
        return HEARTBEAT_SECONDS
    return min(HEARTBEAT_SECONDS, timeout.total_seconds() / 3)


async def while_running(work: Awaitable[T], details: Any) -> T:
    """Await `work`, heartbeating `details` every `interval()` until it is done."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=interval())
            if done:
                return task.result()
            activity.heartbeat(details)
    finally:
        task.cancel()  # only if this attempt is being cancelled: a done task ignores it


async def record(details: Any) -> None:
    """Heartbeat `details` straight to the server and wait until it has them. An activity that
    uses this must not also call `activity.heartbeat`: a throttled heartbeat sent later could
    put older details back. Raises CancelledError if the run cancelled (or paused) the
    activity, which the worker learns only from its own heartbeats."""
    info = activity.info()
    handle = activity.client().get_async_activity_handle(task_token=info.task_token)
    try:
        await handle.heartbeat(details)
    except AsyncActivityCancelledError:
        raise asyncio.CancelledError("the activity was cancelled") from None


async def sleep_recording(seconds: float, details: Any) -> None:
    """Record `details` now, then sleep `seconds` in slices of `interval()`, recording them
    again between slices, so a long pause cannot outlast the heartbeat timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    await record(details)
    while (left := deadline - loop.time()) > 0:
        await asyncio.sleep(min(left, interval()))
        if loop.time() < deadline:
            await record(details)
