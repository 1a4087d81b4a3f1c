"""Heartbeats that fit the work: often enough for the heartbeat timeout the workflow gave, and,
where a retry relies on them, recorded on the server before the work they describe.

The SDK throttles `activity.heartbeat`: an attempt's first heartbeat is sent at once, later
ones at most every 80% of the heartbeat timeout, each carrying the latest details. Calling it
every `interval()` keeps an attempt alive; but details passed to it can still be waiting in
the worker when the worker dies, so a retry cannot rely on them. `record` is for what a retry
must know (what an attempt was about to do): it returns only once the server has it.

The worker also heartbeats every activity that has a heartbeat timeout while it runs
(workers/activity_keepalive.py), resending the latest details the activity gave, so that a
dead worker is noticed within seconds whatever the activity is waiting on. It cannot see what
`record` sends (that goes to the server directly), so an activity that uses `record` is marked
`@records_details` and left alone: a keep-alive heartbeat reaching the server after a `record`
would put the attempt's older details back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from temporalio import activity
from temporalio.client import AsyncActivityCancelledError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_RECORDS_DETAILS = "__records_heartbeat_details__"
# Set while the worker's keep-alive heartbeats the current attempt.
_kept_alive: ContextVar[bool] = ContextVar("heartbeats_kept_alive", default=False)

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


def records_details(fn: F) -> F:
    """Mark an activity that heartbeats with `record`, so the worker's keep-alive leaves it
    alone (it keeps itself alive: `record` and `sleep_recording` heartbeat as they go)."""
    setattr(fn, _RECORDS_DETAILS, True)
    return fn


def records_own_details(fn: Callable[..., Any]) -> bool:
    """Whether `fn` is marked `@records_details`."""
    return bool(getattr(fn, _RECORDS_DETAILS, False))


@contextmanager
def kept_alive() -> Iterator[None]:
    """For the worker's keep-alive: the attempt running in this context is heartbeated by it,
    which `record` refuses (see the module's docstring)."""
    token = _kept_alive.set(True)
    try:
        yield
    finally:
        _kept_alive.reset(token)


async def record(details: Any) -> None:
    """Heartbeat `details` straight to the server and wait until it has them. An activity that
    uses this must be marked `@records_details` and must not also call `activity.heartbeat`:
    a throttled heartbeat sent later could put older details back. Raises CancelledError if
    the run cancelled (or paused) the activity, which the worker learns only from its own
    heartbeats."""
    info = activity.info()
    if _kept_alive.get():
        raise RuntimeError(
            f"activity {info.activity_type} records its heartbeat details but is not marked "
            "@heartbeats.records_details, so the worker's keep-alive heartbeats could "
            "overwrite them on the server: mark it"
        )
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
